"""Make lyra-nano's training and evaluation data (deterministic; needs espeak-ng and the lyra-nano base weights).

    python examples/data/make_nano_dataset.py --out examples/data/nano

1. Questions and instructions are built from templates x fillers; each template's fillers are split once
   (seeded) into train and held-out, so no held-out text is ever trained on.
2. SmolLM2-135M-Instruct (lyra-nano's LLM, adapters off) answers every question TYPED, greedily, in batches.
   Those answers are the targets for the SPOKEN question: speech input learns to behave like typed input.
3. ASR sentences are the plain-letter sentences of those answers (train answers -> train sentences, held-out
   answers -> held-out sentences) plus the question texts themselves.
4. espeak-ng speaks everything; training and held-out sets use disjoint voices (accent + variant + speed + pitch).

Writes OUT/audio/*.wav (16 kHz) and JSON files in the LLaVA/Lyra format (``speech_asr`` holds the transcript):
  stage1_train.json   ASR: "<speech>\\nTranscribe the speech." -> sentence
  stage2_train.json   spoken question "<speech>" -> SmolLM2's typed answer (+ a share of ASR records)
  stage2_all_train.json  every spoken question and every ASR record (for longer stage-2 runs)
  asr_eval.json, qa_eval.json   held-out texts and voices, same formats
  typed_answers.json  question -> the typed answer (all splits), for the agreement evaluation
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import time
from pathlib import Path

from espeak import speak  # examples/data is on sys.path when run as a script
from lyra_sdk.evaluation import complete_sentences

ASR_INSTRUCTION = "Transcribe the speech."
MAX_ANSWER_TOKENS = 48

# (espeak voice "accent+variant", words per minute, pitch 0-99). Held-out voices use variants and an accent
# (West Midlands) that no training voice has.
TRAIN_VOICES = [
    ("en-us+m1", 160, 50), ("en-us+f1", 150, 60), ("en-gb+m3", 170, 40), ("en-gb+f2", 145, 65),
    ("en-gb-x-rp+m2", 155, 45), ("en-gb-scotland+f4", 150, 55), ("en-029+m4", 165, 35),
    ("en-us-nyc+m5", 175, 50), ("en-gb-x-gbclan+f3", 140, 60), ("en-us+m7", 150, 40),
]
EVAL_VOICES = [("en-gb-x-gbcwmd+m6", 155, 45), ("en-us+f5", 165, 65), ("en-gb-scotland+m6", 150, 40),
               ("en-us-nyc+f5", 170, 55)]

COUNTRIES = ["France", "Germany", "Italy", "Spain", "Japan", "China", "India", "Canada", "Mexico", "Brazil",
             "Argentina", "Peru", "Egypt", "Kenya", "Nigeria", "Russia", "Australia", "Greece", "Turkey", "Sweden",
             "Norway", "Poland", "Portugal", "Ireland", "Austria", "Belgium", "Chile", "Cuba", "Thailand",
             "Vietnam", "Indonesia", "Iran", "Iraq", "Morocco", "Ghana", "Finland", "Denmark", "Hungary",
             "South Korea", "the United Kingdom", "the United States", "Switzerland", "the Netherlands",
             "New Zealand", "Colombia", "Venezuela", "Ukraine", "Pakistan", "Saudi Arabia", "Israel"]
CONCEPTS = ["photosynthesis", "gravity", "a volcano", "an atom", "a galaxy", "democracy", "electricity",
            "a rainbow", "an earthquake", "the internet", "a computer", "a vaccine", "evolution", "climate change",
            "a black hole", "a hurricane", "inflation", "a glacier", "the moon", "the sun", "a cell",
            "friction", "a magnet", "an ecosystem", "a desert", "a rainforest", "a telescope", "a battery",
            "oxygen", "a planet", "a comet", "a virus", "a bacterium", "a tsunami", "the ocean", "a river",
            "a calendar", "a library", "a museum", "an orchestra", "a poem", "a novel", "a dictionary",
            "a bridge", "a satellite", "a robot", "a recipe", "a vitamin", "a muscle", "the heart"]
ANIMALS = ["cats", "dogs", "elephants", "dolphins", "owls", "penguins", "lions", "tigers", "bees", "ants",
           "horses", "sharks", "whales", "eagles", "frogs", "snakes", "rabbits", "giraffes", "zebras", "bears",
           "wolves", "foxes", "octopuses", "butterflies", "spiders", "kangaroos", "koalas", "camels", "parrots",
           "turtles", "crocodiles", "cows", "sheep", "goats", "chickens", "ducks", "bats", "monkeys", "pandas",
           "squirrels"]
THINGS_COLOUR = ["the sky", "grass", "a banana", "snow", "a ripe tomato", "an orange", "coal", "milk",
                 "a lemon", "the sea", "a strawberry", "a carrot", "chocolate", "blood", "a cucumber", "the sun",
                 "a polar bear", "a crow", "a flamingo", "a lime", "an eggplant", "a pumpkin", "cotton", "ash",
                 "a blueberry", "a cherry", "a leaf in spring", "gold", "silver", "a fire truck"]
COUNTS = ["days are in a week", "months are in a year", "hours are in a day", "minutes are in an hour",
          "seconds are in a minute", "legs does a spider have", "legs does a dog have", "wheels does a bicycle have",
          "sides does a triangle have", "sides does a square have", "days are in a year", "players are on a soccer team",
          "planets are in the solar system", "continents are there", "oceans are there", "strings does a guitar have",
          "legs does an insect have", "hearts does an octopus have", "weeks are in a year", "days are in February",
          "keys does a piano have", "colors are in a rainbow", "letters are in the English alphabet",
          "bones are in the human body", "teeth does an adult human have"]
ACTIVITIES = ["sleeping better", "studying for an exam", "saving money", "learning a new language", "cooking rice",
              "staying healthy", "writing an essay", "making friends", "running a marathon", "reducing stress",
              "keeping a plant alive", "cleaning the kitchen", "giving a speech", "learning to swim",
              "planning a trip", "waking up early", "drinking more water", "reading more books", "learning math",
              "taking good photos", "painting a room", "baking bread", "growing tomatoes", "starting a business",
              "staying focused", "being on time", "training a puppy", "learning the piano", "packing a suitcase",
              "writing a letter"]
TOPICS = ["the ocean", "autumn", "a city at night", "coffee", "friendship", "the mountains", "winter", "music",
          "a rainy day", "the stars", "summer holidays", "a busy market", "an old library", "the forest", "trains",
          "breakfast", "a birthday party", "the desert", "a small village", "space travel", "the river",
          "a football match", "a quiet morning", "the garden", "snow", "a thunderstorm", "the beach", "a museum",
          "a long journey", "the moon"]
OPPOSITES = ["hot", "big", "fast", "happy", "light", "early", "strong", "old", "rich", "loud", "open", "wet",
             "high", "hard", "full", "sweet", "brave", "clean", "long", "thick", "empty", "simple", "near", "warm",
             "dark", "young", "cheap", "easy", "soft", "friendly"]
PEOPLE = ["Albert Einstein", "Isaac Newton", "William Shakespeare", "Marie Curie", "Leonardo da Vinci",
          "Charles Darwin", "Mozart", "Napoleon", "Abraham Lincoln", "Cleopatra", "Galileo", "Nelson Mandela",
          "Thomas Edison", "Beethoven", "Aristotle", "Plato", "Christopher Columbus", "Julius Caesar",
          "Martin Luther King", "Mahatma Gandhi", "Pablo Picasso", "Vincent van Gogh", "Jane Austen",
          "Charles Dickens", "Nikola Tesla"]
NEEDS = ["sleep", "water", "food", "exercise", "trees", "bees", "rain", "schools", "friends", "sunlight",
         "vegetables", "doctors", "music", "bridges", "laws", "vacations", "maps", "salt", "soap", "clocks"]

TEMPLATES: list[tuple[str, list[str]]] = [
    ("What is the capital of {}?", COUNTRIES),
    ("What is {}?", CONCEPTS),
    ("Explain {} in simple words.", CONCEPTS),
    ("Tell me a fun fact about {}.", ANIMALS),
    ("What do {} eat?", ANIMALS),
    ("What color is {}?", THINGS_COLOUR),
    ("How many {}?", COUNTS),
    ("Give me a tip for {}.", ACTIVITIES),
    ("Write one sentence about {}.", TOPICS),
    ("What is the opposite of {}?", OPPOSITES),
    ("Who was {}?", PEOPLE),
    ("Why do we need {}?", NEEDS),
]
EVAL_SHARE = 0.15


def split_questions(seed: int) -> tuple[list[str], list[str]]:
    """Every template's fillers, shuffled with ``seed``: the first ~15% make held-out questions."""
    rng = random.Random(seed)
    train, held = [], []
    for template, fillers in TEMPLATES:
        order = list(fillers)
        rng.shuffle(order)
        n_eval = max(2, round(len(order) * EVAL_SHARE))
        held += [template.format(f) for f in order[:n_eval]]
        train += [template.format(f) for f in order[n_eval:]]
    return train, held


def speakable_sentences(text: str) -> list[str]:
    """Sentences of plain words (letters, commas, apostrophes) with 4-28 words: clean ASR targets."""
    out = []
    for s in re.split(r"(?<=[.!?])\s+", text):
        s = s.strip()
        words = s.split()
        if 4 <= len(words) <= 28 and re.fullmatch(r"[A-Za-z][A-Za-z ,'\-]*[.!?]", s):
            out.append(s)
    return out


def generate_typed(prompts: list[str], config: str, batch_size: int, max_new_tokens: int, what: str) -> list[str]:
    """SmolLM2's greedy answers to typed ``prompts`` (adapters off), in order, with progress on stderr."""
    from lyra_sdk import Lyra

    lyra = Lyra.from_config(config)
    out: list[str] = []
    start = time.time()
    for i in range(0, len(prompts), batch_size):
        out += lyra.generate(prompts[i : i + batch_size], route=None, max_new_tokens=max_new_tokens)
        sys.stderr.write(f"\r{what}: {len(out)}/{len(prompts)} ({time.time() - start:.0f} s)")
    sys.stderr.write("\n")
    return out


def typed_answers(questions: list[str], config: str, batch_size: int) -> dict[str, str]:
    """SmolLM2's own greedy answers to the typed questions (adapters off), cut to complete sentences."""
    texts = generate_typed(questions, config, batch_size, MAX_ANSWER_TOKENS, "answering typed questions")
    return {q: complete_sentences(t) for q, t in zip(questions, texts, strict=True)}


def asr_record(rid: str, wav: str, text: str, voice: str) -> dict:
    return {"id": f"{rid}:{voice}", "speech": wav, "speech_asr": text, "conversations": [
        {"from": "human", "value": f"<speech>\n{ASR_INSTRUCTION}"}, {"from": "gpt", "value": text}]}


def qa_record(rid: str, wav: str, question: str, answer: str, voice: str) -> dict:
    return {"id": f"{rid}:{voice}", "speech": wav, "speech_asr": question, "conversations": [
        {"from": "human", "value": "<speech>"}, {"from": "gpt", "value": answer}]}


def build(out: Path, config: str, seed: int, qa_voices: int, max_asr: int, batch_size: int) -> dict[str, int]:
    rng = random.Random(seed)
    train_q, eval_q = split_questions(seed)
    answers = typed_answers(train_q + eval_q, config, batch_size)
    shutil.rmtree(out / "audio", ignore_errors=True)
    (out / "audio").mkdir(parents=True)
    sets: dict[str, list[dict]] = {}
    seconds = 0.0
    for split, questions, voices in (("train", train_q, TRAIN_VOICES), ("eval", eval_q, EVAL_VOICES)):
        qa, asr = [], []
        n_voices = qa_voices if split == "train" else 1
        for i, q in enumerate(questions):
            for k in range(n_voices):
                voice = voices[(i * n_voices + k) % len(voices)]
                wav = f"audio/{split}_qa_{i:04d}_{k}.wav"
                seconds += len(speak(q, voice, out / wav)) / 16000
                qa.append(qa_record(f"{split}-qa-{i}-{k}", wav, q, answers[q], voice[0]))
        texts = list(dict.fromkeys(s for q in questions for s in speakable_sentences(answers[q])))
        texts += questions
        rng.shuffle(texts)
        texts = texts[: max_asr if split == "train" else max(150, max_asr // 8)]
        for i, text in enumerate(texts):
            voice = voices[(i + 3) % len(voices)]
            wav = f"audio/{split}_asr_{i:04d}.wav"
            seconds += len(speak(text, voice, out / wav)) / 16000
            asr.append(asr_record(f"{split}-asr-{i}", wav, text, voice[0]))
        sets[split + "_qa"], sets[split + "_asr"] = qa, asr
        sys.stderr.write(f"{split}: {len(qa)} spoken questions, {len(asr)} ASR sentences\n")
    mix = sets["train_qa"] + rng.sample(sets["train_asr"], k=min(len(sets["train_asr"]), len(sets["train_qa"]) // 3))
    rng.shuffle(mix)
    every = sets["train_qa"] + sets["train_asr"]
    random.Random(seed + 1).shuffle(every)
    files = {"stage1_train.json": sets["train_asr"], "stage2_train.json": mix, "stage2_all_train.json": every,
             "asr_eval.json": sets["eval_asr"], "qa_eval.json": sets["eval_qa"]}
    for name, recs in files.items():
        (out / name).write_text(json.dumps(recs, indent=1), encoding="utf-8")
    (out / "typed_answers.json").write_text(json.dumps(answers, indent=1), encoding="utf-8")
    stats = {name: len(recs) for name, recs in files.items()}
    stats["audio_hours"] = round(seconds / 3600, 2)
    (out / "stats.json").write_text(json.dumps(stats, indent=1), encoding="utf-8")
    return stats


def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=here / "nano")
    ap.add_argument("--config", default=str(here.parent / "configs" / "lyra-nano.yaml"),
                    help="the model whose LLM answers the typed questions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--qa-voices", type=int, default=2, help="training voices per spoken question")
    ap.add_argument("--max-asr", type=int, default=1200, help="training ASR sentences (held-out: an eighth, >= 150)")
    ap.add_argument("--batch-size", type=int, default=16, help="typed questions answered per batch")
    args = ap.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed: apt-get install espeak-ng")
    stats = build(args.out, args.config, args.seed, args.qa_voices, args.max_asr, args.batch_size)
    sys.stderr.write(json.dumps(stats) + "\n")


if __name__ == "__main__":
    main()
