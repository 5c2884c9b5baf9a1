"""lyra-nano voice-variety data: the paragraph clips' texts again, each in a voice from a wide pool (deterministic).

    python examples/data/make_nano_voices.py --out examples/data/nano     # after make_nano_paragraphs.py

The other sets use 10 training voices; the projector then reads held-out voices far worse than training ones
(stage 1d ends near 0.5 ASR-CTC on its training batches, 2.24 on the held-out ones). This re-speaks every clip text of stage1_paragraphs.json
(no held-out sentence is among them) with one of the 7 training accents x 60 espeak-ng variants (human-like
ones: the robot, whisper and novelty variants are left out), at a jittered speed and pitch. The held-out
voices stay unheard: no clip uses their variants (m6, f5) or the held-out accent (en-gb-x-gbcwmd).

Writes OUT/audio/voices_*.wav and OUT/stage1_voices.json (the Lyra ASR format) and adds its counts to
OUT/stats.json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

from espeak import speak_clips, update_stats  # examples/data is on sys.path when run as a script
from make_nano_dataset import EVAL_VOICES, TRAIN_VOICES, asr_record

ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan"]
VARIANTS = ["adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "antonio", "aunty", "belinda", "benjamin", "boris",
            "caleb", "david", "Denis", "Diogo", "ed", "edward", "Gene", "gustave", "Henrique", "Hugo", "iven", "Jacky",
            "john", "Lee", "linda", "marcelo", "Marco", "Mario", "max", "Michael", "michel", "miguel", "Mike", "Nguyen",
            "pablo", "paul", "pedro", "quincy", "rob", "robert", "steph", "zac", "anika", "f1", "f2", "f3", "f4", "m1",
            "m2", "m3", "m4", "m5", "m7", "m8", "klatt", "klatt2", "klatt3", "grandpa", "norbert"]


def check_pool() -> None:
    """Refuse a pool that holds a held-out variant or the held-out accent."""
    held_variants = {v.split("+")[1] for v, _, _ in EVAL_VOICES}
    held_accents = {v.split("+")[0] for v, _, _ in EVAL_VOICES} - {v.split("+")[0] for v, _, _ in TRAIN_VOICES}
    bad = (held_variants & set(VARIANTS)) | (held_accents & set(ACCENTS))
    if bad:
        raise SystemExit(f"the voice pool uses held-out voices: {sorted(bad)}")


def wide_voice(rng: random.Random) -> tuple[str, int, int]:
    """One voice of the wide pool: a training accent + one of 60 variants, speed 135-185, pitch 25-75."""
    return f"{rng.choice(ACCENTS)}+{rng.choice(VARIANTS)}", rng.randint(135, 185), rng.randint(25, 75)


def clip_voice(rng: random.Random, i: int, pool: str) -> tuple[str, int, int]:
    """Clip ``i``'s voice: ``wide`` = :func:`wide_voice`; ``train`` = the training voices in turn, speed
    jittered by up to 15 and pitch by up to 10."""
    if pool == "wide":
        return wide_voice(rng)
    base, speed, pitch = TRAIN_VOICES[i % len(TRAIN_VOICES)]
    return base, speed + rng.randint(-15, 15), max(0, min(99, pitch + rng.randint(-10, 10)))


def build(out: Path, seed: int, workers: int) -> dict:
    src = out / "stage1_paragraphs.json"
    if not src.is_file():
        raise SystemExit(f"{src} is missing: run make_nano_paragraphs.py --out {out} first")
    check_pool()
    texts = [r["speech_asr"] for r in json.loads(src.read_text(encoding="utf-8"))]
    rng = random.Random(seed + 13)
    jobs, records = [], []
    for i, text in enumerate(texts):
        voice = wide_voice(rng)
        name = voice[0]
        wav = f"audio/voices_{i:05d}.wav"
        jobs.append((text, voice, str(out / wav)))
        records.append(asr_record(f"train-voices-{i}", wav, text, name))
    for old in (out / "audio").glob("voices_*.wav"):
        old.unlink()
    seconds = speak_clips(jobs, workers)
    (out / "stage1_voices.json").write_text(json.dumps(records, indent=1), encoding="utf-8")
    return update_stats(out, {"stage1_voices.json": len(records),
                              "voices_used": len({r["id"].split(":")[1] for r in records}),
                              "voices_hours": round(seconds / 3600, 2)})


def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=here / "nano")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="espeak-ng processes")
    args = ap.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed: apt-get install espeak-ng")
    sys.stderr.write(json.dumps(build(args.out, args.seed, args.workers)) + "\n")


if __name__ == "__main__":
    main()
