"""More lyra-nano ASR data: SmolLM2's own paragraphs on the TRAINING topics, spoken in packed clips (deterministic).

    python examples/data/make_nano_paragraphs.py --out examples/data/nano     # after make_nano_dataset.py

Word identity is what a projector trained on ~850 short sentences fails to learn (each word is heard a handful
of times). This adds many more distinct words per hour of audio, in the vocabulary SmolLM2 itself writes:

1. Prompts "Write a short paragraph about X." / "Describe X." / "Tell me something interesting about X." for
   every filler X of the TRAINING questions only (held-out fillers never appear in a prompt), answered greedily
   by SmolLM2-135M-Instruct (adapters off).
2. The answers' plain-letter sentences (:func:`make_nano_dataset.speakable_sentences`), deduplicated and with
   every held-out ASR sentence removed, are packed 1-3 to a clip of at most ``--max-seconds`` of speech.
3. espeak-ng speaks each clip with a training accent/variant at a jittered speed and pitch (held-out voices
   share no accent+variant with these).

Writes OUT/audio/para_*.wav and OUT/stage1_paragraphs.json (the Lyra ASR format, ``speech_asr`` = transcript),
and adds its counts to OUT/stats.json.

``--topics N`` prompts N common words instead of the fillers (one style each, drawn in turn), so the words the
word lists voice out of context are heard in sentences too: the tokenizer's whole-word pieces ranked
``--topic-skip`` to 12,000 (make_nano_wordlists.vocabulary; the most frequent are function words), sampled
deterministically, never a held-out question's filler; ``--name`` and ``--voice-pool wide`` as in
make_nano_wordlists.py:

    python examples/data/make_nano_paragraphs.py --topics 480 --name topics --voice-pool wide

``--topic-seed S`` draws another 480 words (and voices) for a further set, e.g. ``--topic-seed 1 --name topics2``.
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
from make_nano_dataset import (TEMPLATES, asr_record, generate_typed, speakable_sentences,
                               split_questions)
from make_nano_voices import check_pool, clip_voice

STYLES = ["Write a short paragraph about {}.", "Describe {}.", "Tell me something interesting about {}."]
WORDS_PER_SECOND = 2.6  # espeak-ng near 155 words per minute


def pack(sentences: list[str], rng: random.Random, max_seconds: float) -> list[str]:
    """Consecutive sentences joined 1-3 at a time while the clip stays under ``max_seconds`` of speech."""
    clips, i = [], 0
    while i < len(sentences):
        want, text = rng.randint(1, 3), sentences[i]
        i += 1
        while want > 1 and i < len(sentences) and len((text + " " + sentences[i]).split()) <= max_seconds * WORDS_PER_SECOND:
            text, i, want = text + " " + sentences[i], i + 1, want - 1
        clips.append(text)
    return clips


def held_out_fillers(seed: int) -> set[str]:
    """Fillers of any held-out question (never put in a prompt)."""
    _, held_q = split_questions(seed)
    return {f for template, fillers in TEMPLATES for f in fillers if template.format(f) in held_q}


def training_fillers(seed: int) -> list[str]:
    """Fillers of the training questions (a filler in any held-out question is left out)."""
    train_q, _ = split_questions(seed)
    train = {f for template, fillers in TEMPLATES for f in fillers if template.format(f) in train_q}
    return sorted(train - held_out_fillers(seed))


def topic_prompts(words: list[str], count: int, seed: int, skip: int = 200, top: int = 12000,
                  avoid: set[str] = frozenset()) -> list[str]:
    """``count`` prompts on common words: ``words`` (frequent first) ranked ``skip`` to ``top``, minus ``avoid``
    (compared case-insensitively), sampled with ``seed``; the styles are taken in turn."""
    avoid_lower = {a.lower() for a in avoid}
    pool = [w for w in words[skip:top] if w.lower() not in avoid_lower]
    if count > len(pool):
        raise SystemExit(f"--topics {count}: only {len(pool)} words ranked {skip} to {top}")
    chosen = random.Random(seed + 13).sample(pool, count)
    return [STYLES[i % len(STYLES)].format(w) for i, w in enumerate(chosen)]


def build(out: Path, config: str, seed: int, batch_size: int, max_new_tokens: int, max_seconds: float,
          topics: int = 0, topic_skip: int = 200, name: str = "paragraphs", voice_pool: str = "train",
          topic_seed: int | None = None) -> dict:
    draw = seed if topic_seed is None else topic_seed  # which topic words and voices; the held-out split is seed's
    if not (out / "asr_eval.json").is_file():
        raise SystemExit(f"{out / 'asr_eval.json'} is missing: run make_nano_dataset.py --out {out} first")
    held = {r["speech_asr"] for file in ("asr_eval.json", "qa_eval.json")
            for r in json.loads((out / file).read_text(encoding="utf-8"))}
    if topics:
        from make_nano_wordlists import vocabulary

        prompts = topic_prompts(vocabulary(config), topics, draw, topic_skip, avoid=held_out_fillers(seed))
    else:
        prompts = [style.format(f) for f in training_fillers(seed) for style in STYLES]
    if voice_pool == "wide":
        check_pool()
    texts = generate_typed(prompts, config, batch_size, max_new_tokens, "writing paragraphs")
    sentences = list(dict.fromkeys(s for t in texts for s in speakable_sentences(t)))
    sentences = [s for s in sentences if s not in held]
    if voice_pool == "wide":  # voices down to 135 words a minute: a smaller word budget, no sentence over it
        max_seconds *= 135 / 155
        sentences = [s for s in sentences if len(s.split()) <= max_seconds * WORDS_PER_SECOND]
    rng = random.Random(draw + 7)
    clips = pack(sentences, rng, max_seconds)
    prefix = "para" if name == "paragraphs" else name
    for old in (out / "audio").glob(f"{prefix}_*.wav"):
        old.unlink()
    jobs, records = [], []
    for i, text in enumerate(clips):
        voice = clip_voice(rng, i, voice_pool)
        wav = f"audio/{prefix}_{i:05d}.wav"
        jobs.append((text, voice, str(out / wav)))
        records.append(asr_record(f"train-{prefix}-{i}", wav, text, voice[0]))
    seconds = speak_clips(jobs)
    (out / f"stage1_{name}.json").write_text(json.dumps(records, indent=1), encoding="utf-8")
    key = "paragraph" if name == "paragraphs" else name
    return update_stats(out, {f"stage1_{name}.json": len(records), f"{key}_sentences": len(sentences),
                              f"{key}_hours": round(seconds / 3600, 2)})


def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=here / "nano")
    ap.add_argument("--config", default=str(here.parent / "configs" / "lyra-nano.yaml"))
    ap.add_argument("--seed", type=int, default=0, help="must match make_nano_dataset.py's --seed")
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--max-seconds", type=float, default=20.0, help="speech per packed clip (Whisper's window is 30 s)")
    ap.add_argument("--topics", type=int, default=0,
                    help="prompt this many common words instead of the training fillers (0 = the fillers)")
    ap.add_argument("--topic-skip", type=int, default=200, help="with --topics: leave out the most frequent N")
    ap.add_argument("--topic-seed", type=int, default=None,
                    help="with --topics: draw other topic words and voices (default: --seed); the held-out split "
                         "stays --seed's")
    ap.add_argument("--name", default="paragraphs", help="set name: OUT/stage1_NAME.json (default: paragraphs)")
    ap.add_argument("--voice-pool", choices=["train", "wide"], default="train",
                    help="train = the 10 training voices; wide = make_nano_voices.py's pool")
    args = ap.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed: apt-get install espeak-ng")
    if not re.fullmatch(r"[a-z0-9_]+", args.name):
        raise SystemExit("--name takes lower-case letters, digits and _")
    if args.topics < 0 or args.topic_skip < 0:
        raise SystemExit("--topics and --topic-skip take 0 or a positive number")
    sys.stderr.write(json.dumps(build(args.out, args.config, args.seed, args.batch_size, args.max_new_tokens,
                                      args.max_seconds, args.topics, args.topic_skip, args.name,
                                      args.voice_pool, args.topic_seed)) + "\n")


if __name__ == "__main__":
    main()
