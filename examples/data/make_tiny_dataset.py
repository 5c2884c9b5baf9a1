"""Make the tiny training sets used by the stage configs in examples/training (deterministic, needs espeak-ng).

    python examples/data/make_tiny_dataset.py --out examples/data/tiny

Writes 16 kHz wavs under OUT/audio and four LLaVA/Lyra-format JSON pairs (train/eval):
  asr_*.json    stage 1: "<speech> Record the spoken words as text." -> transcript (+ speech_asr)
  qa_*.json     stage 2: a spoken arithmetic/colour question -> its answer (+ speech_asr for LCMR)
  long_*.json   stage 3: 35-45 s of several spoken sentences -> "how many sentences" style answers
  units_*.json  stage 4: typed question -> answer text + tgt_unit, discrete units of the spoken answer
  text_*.json   stage 0 (tiny demo only): the same texts typed, to give the random tiny LLM a language first
Eval sets use voices and texts that the training sets do not.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from espeak import speak  # examples/data is on sys.path when run as a script

TRAIN_VOICES = [("en-us", 150, 50), ("en-gb", 170, 40), ("en-us+f3", 140, 60), ("en+m3", 160, 45)]
EVAL_VOICES = [("en-us+f2", 155, 55), ("en-gb+m2", 145, 35)]
NOUNS = ["cat", "dog", "bird", "fish", "horse", "lion", "tiger", "mouse", "sheep", "goat", "duck", "frog"]
COLOURS = ["red", "blue", "green", "yellow", "black", "white"]
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def units_of(audio: np.ndarray, vocab: int = 1000) -> str:
    """Deterministic pseudo speech units: per 20 ms frame, quantised log energy x spectral centroid, deduplicated."""
    frames = audio[: len(audio) // 320 * 320].reshape(-1, 320)
    spec = np.abs(np.fft.rfft(frames * np.hanning(320), axis=1)) + 1e-6
    energy = np.clip((np.log(spec.sum(1)) + 2) / 8, 0, 0.999)
    centroid = np.clip((spec * np.arange(spec.shape[1])).sum(1) / spec.sum(1) / spec.shape[1], 0, 0.999)
    ids = (np.floor(energy * 25) * 40 + np.floor(centroid * 40)).astype(int) % vocab
    dedup = [int(u) for i, u in enumerate(ids) if i == 0 or u != ids[i - 1]]
    return "".join(f"<{u}>" for u in dedup)


def sentences(rng: random.Random, n: int) -> list[str]:
    """Distinct short sentences."""
    out: set[str] = set()
    while len(out) < n:
        out.add(f"the {rng.choice(COLOURS)} {rng.choice(NOUNS)} sees {rng.choice(WORDS)} {rng.choice(NOUNS)}s")
    return sorted(out)


def questions(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """(question, answer) pairs."""
    out: dict[str, str] = {}
    while len(out) < n:
        a, b = rng.randrange(5), rng.randrange(5)
        if rng.random() < 0.5:
            out[f"what is {WORDS[a]} plus {WORDS[b]}"] = WORDS[a + b]
        else:
            c, x = rng.choice(COLOURS), rng.choice(NOUNS)
            out[f"what colour is the {c} {x}"] = f"the {x} is {c}"
    return sorted(out.items())


def build(out: Path, n_train: int, n_eval: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    audio_dir = out / "audio"
    shutil.rmtree(out, ignore_errors=True)
    audio_dir.mkdir(parents=True)
    texts = sentences(rng, n_train + n_eval)
    qas = questions(rng, n_train + n_eval)
    sets: dict[str, list[dict]] = {}
    for split, voices, sl in (("train", TRAIN_VOICES, slice(0, n_train)), ("eval", EVAL_VOICES, slice(n_train, None))):
        asr, qa, units, long = [], [], [], []
        for i, text in enumerate(texts[sl]):
            f = f"audio/{split}_asr_{i:03d}.wav"
            speak(text, voices[i % len(voices)], out / f)
            asr.append({"id": f"{split}-asr-{i}", "speech": f, "speech_asr": text, "conversations": [
                {"from": "human", "value": "<speech>\nRecord the spoken words as text."},
                {"from": "gpt", "value": text}]})
        for i, (q, a) in enumerate(qas[sl]):
            f = f"audio/{split}_qa_{i:03d}.wav"
            speak(q, voices[(i + 1) % len(voices)], out / f)
            qa.append({"id": f"{split}-qa-{i}", "speech": f, "speech_asr": q, "conversations": [
                {"from": "human", "value": "<speech>"}, {"from": "gpt", "value": a}]})
            ans = out / f"audio/{split}_ans_{i:03d}.wav"
            wav = speak(a, voices[i % len(voices)], ans)
            units.append({"id": f"{split}-unit-{i}", "tgt_unit": units_of(wav), "conversations": [
                {"from": "human", "value": q + "?"}, {"from": "gpt", "value": a}]})
        for i in range(max(1, len(texts[sl]) // 8)):
            parts = [speak(t, voices[(i + k) % len(voices)], out / f"audio/tmp_{k}.wav")
                     for k, t in enumerate(texts[sl][i * 8 : i * 8 + 8])]
            gap = np.zeros(int(16000 * 2.5), np.float32)
            clip = np.concatenate([np.concatenate([p, gap]) for p in parts])
            f = f"audio/{split}_long_{i:03d}.wav"
            sf.write(out / f, clip, 16000, subtype="PCM_16")
            first = texts[sl][i * 8]
            long.append({"id": f"{split}-long-{i}", "speech": f, "conversations": [
                {"from": "human", "value": "<speech>\nWhat was the first sentence?"}, {"from": "gpt", "value": first}]})
        for tmp in audio_dir.glob("tmp_*.wav"):
            tmp.unlink()
        text = [{"id": f"{split}-text-{i}", "conversations": [
            {"from": "human", "value": "Write a sentence about animals."}, {"from": "gpt", "value": t}]}
            for i, t in enumerate(texts[sl])]
        text += [{"id": f"{split}-typed-{i}", "conversations": [
            {"from": "human", "value": q + "?"}, {"from": "gpt", "value": a}]} for i, (q, a) in enumerate(qas[sl])]
        for name, recs in (("asr", asr), ("qa", qa), ("units", units), ("long", long), ("text", text)):
            sets[f"{name}_{split}.json"] = recs
    for name, recs in sets.items():
        (out / name).write_text(json.dumps(recs, indent=1), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "tiny")
    ap.add_argument("--n-train", type=int, default=32)
    ap.add_argument("--n-eval", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed: apt-get install espeak-ng")
    build(args.out, args.n_train, args.n_eval, args.seed)


if __name__ == "__main__":
    main()
