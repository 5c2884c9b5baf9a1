"""Make lyra-nano's development set: new questions, never trained on and never in the held-out sets, for tuning
decoding settings (the beam's ``lm_weight``, ``token_bonus``, ...) without touching the held-out evaluation.

    python examples/data/make_nano_dev.py --out examples/data/nano      # after make_nano_dataset.py; ~2 min

The questions come from templates and fillers of their own (none of make_nano_dataset.py's; checked below).
SmolLM2 answers them typed, as for the other sets; the dev set speaks each question and the answers' plain
sentences in the *held-out* voices (so it measures the same voice gap as the held-out sets, on other texts).
Writes OUT/audio/dev_*.wav, OUT/dev_asr.json (ASR format, "<speech>\\nTranscribe the speech.") and
OUT/dev_qa.json (spoken question "<speech>" -> the typed answer), and adds their sizes to OUT/stats.json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

from espeak import speak_clips, update_stats  # examples/data is on sys.path when run as a script
from make_nano_dataset import (EVAL_VOICES, MAX_ANSWER_TOKENS, TEMPLATES, asr_record, generate_typed, qa_record,
                               speakable_sentences)

from lyra_sdk.evaluation import complete_sentences

DEV_TEMPLATES: list[tuple[str, list[str]]] = [
    ("How does {} work?", ["a refrigerator", "a bicycle", "a compass", "a microwave oven", "a telescope",
                           "a battery", "a thermometer", "an elevator"]),
    ("What are the benefits of {}?", ["walking every day", "reading books", "drinking green tea", "gardening",
                                      "swimming", "playing chess"]),
    ("Describe {} in two sentences.", ["a desert", "a forest", "a river", "a castle", "a library", "a farm"]),
    ("Why is {} important?", ["honesty", "recycling", "teamwork", "kindness", "education", "patience"]),
    ("Where do {} live?", ["koalas", "polar bears", "camels", "frogs", "parrots", "kangaroos"]),
    ("What is the largest {} in the world?", ["desert", "ocean", "animal", "country", "lake", "mountain"]),
    ("How do I make {}?", ["a cup of tea", "pancakes", "a paper plane", "a sandwich", "lemonade"]),
    ("What was {} famous for?", ["Charles Darwin", "Mozart", "Galileo", "Cleopatra", "Thomas Edison"]),
]


def check_disjoint() -> None:
    """Refuse a dev question that make_nano_dataset.py could also build (its templates x fillers)."""
    theirs = {t.format(f) for t, fillers in TEMPLATES for f in fillers}
    clash = sorted({t.format(f) for t, fillers in DEV_TEMPLATES for f in fillers} & theirs)
    if clash:
        raise SystemExit(f"dev questions also made by make_nano_dataset.py: {clash}")


def build(out: Path, config: str, seed: int, max_asr: int, batch_size: int) -> dict:
    """Answer, speak and write the dev sets; returns the updated stats."""
    if not (out / "asr_eval.json").is_file():
        raise SystemExit(f"{out / 'asr_eval.json'} is missing: run make_nano_dataset.py --out {out} first")
    check_disjoint()
    questions = [t.format(f) for t, fillers in DEV_TEMPLATES for f in fillers]
    texts = generate_typed(questions, config, batch_size, MAX_ANSWER_TOKENS, "answering dev questions")
    answers = {q: complete_sentences(t) for q, t in zip(questions, texts, strict=True)}
    held = {r["speech_asr"] for f in ("asr_eval.json", "qa_eval.json", "stage2_all_train.json")
            for r in json.loads((out / f).read_text(encoding="utf-8"))}
    sentences = [s for s in dict.fromkeys(s for q in questions for s in speakable_sentences(answers[q]))
                 if s not in held]
    random.Random(seed).shuffle(sentences)
    sentences = sentences[:max_asr]
    for old in (out / "audio").glob("dev_*.wav"):
        old.unlink()
    jobs, qa, asr = [], [], []
    for i, q in enumerate(questions):
        voice = EVAL_VOICES[i % len(EVAL_VOICES)]
        wav = f"audio/dev_qa_{i:04d}.wav"
        jobs.append((q, voice, str(out / wav)))
        qa.append(qa_record(f"dev-qa-{i}", wav, q, answers[q], voice[0]))
    for i, text in enumerate(sentences):
        voice = EVAL_VOICES[(i + 1) % len(EVAL_VOICES)]
        wav = f"audio/dev_asr_{i:04d}.wav"
        jobs.append((text, voice, str(out / wav)))
        asr.append(asr_record(f"dev-asr-{i}", wav, text, voice[0]))
    seconds = speak_clips(jobs, workers=2)
    (out / "dev_qa.json").write_text(json.dumps(qa, indent=1), encoding="utf-8")
    (out / "dev_asr.json").write_text(json.dumps(asr, indent=1), encoding="utf-8")
    return update_stats(out, {"dev_qa.json": len(qa), "dev_asr.json": len(asr),
                              "dev_audio_hours": round(seconds / 3600, 3)})


def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=here / "nano")
    ap.add_argument("--config", default=str(here.parent / "configs" / "lyra-nano.yaml"),
                    help="the model whose LLM answers the typed questions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-asr", type=int, default=120, help="dev ASR sentences")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed: apt-get install espeak-ng")
    sys.stderr.write(json.dumps(build(args.out, args.config, args.seed, args.max_asr, args.batch_size)) + "\n")


if __name__ == "__main__":
    main()
