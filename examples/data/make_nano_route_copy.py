"""Typed copy records for lyra-nano's `speech` route: "TEXT\\nTranscribe the speech." -> TEXT (deterministic).

    python examples/data/make_nano_route_copy.py --out examples/data/nano      # after the sentence sets exist

With CTC compression and ``decode: beam``, the LLM reads a clip as the input embeddings of the word pieces the
beam chose, which is exactly what typing those pieces gives (``Lyra.hear`` shows them). A transcription prompt
("<speech>\\nTranscribe the speech.") therefore reaches the `speech` route as typed text followed by the
instruction, and the route's job is to copy it. Trained only on the clips of the sentence sets, whose greedy
posterior mixes it learnt by heart, the route instead rewrites what it reads: on recipe 11's held-out sentences
its transcripts (20.9% WER) are worse than the pieces the beam heard (13.6%), and typing the heard pieces into
the route gives the same transcripts word for word.

This writes OUT/route_copy.json: for every transcript of the ``--from`` sets (Lyra-format files in OUT; a
transcript is ``speech_asr``), a record with no media whose human turn is the transcript typed in the place of
``<speech>`` and whose answer is the same text. A share ``--corrupt`` of the records first has 1-2 words dropped,
repeated or replaced by another training word, in both turns, so the route learns to copy what it reads even
when the beam heard something ungrammatical, rather than to guess the sentence it resembles. A share ``--vary``
of the records asks in other words or another layout (the instruction before the text, a space instead of the
newline; :data:`INSTRUCTIONS`, :data:`LAYOUTS`), so the route copies whatever way a user asks for a transcript;
the rest keep the layout ``lyra run --speech FILE --prompt "Transcribe the speech."`` builds. Any transcript that
is also a held-out sentence or question (asr_eval.json, qa_eval.json, dev_*.json when present) is left out.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from make_nano_dataset import ASR_INSTRUCTION  # examples/data is on sys.path when run as a script

from lyra_sdk.evaluation import normalize_text  # the text WER compares: one notion of "the same sentence"

DEFAULT_SETS = ["stage1_train.json", "stage2_all_train.json", "stage1_topics.json", "stage1_paragraphs.json"]
HELD_OUT = ["asr_eval.json", "qa_eval.json", "dev_asr.json", "dev_qa.json"]
#: other ways of asking for a transcript (the varied records draw one; ASR_INSTRUCTION is the usual one)
INSTRUCTIONS = [ASR_INSTRUCTION, "Transcribe this audio.", "Write down what is said.", "Please transcribe the speech.",
                "Transcribe the recording.", "What does the speaker say? Write it down word for word.",
                "Transcribe the speech", "transcribe the speech.", "Write out the words you hear.",
                "Give me a transcript of this speech."]
#: where the speech (typed as its text, T) and the instruction (I) sit in the human turn
LAYOUTS = ["{t}\n{i}", "{t} {i}", "{i}\n{t}", "{i} {t}", "{t}\n\n{i}"]


def corrupt(text: str, rng: random.Random, pool: list[str]) -> str:
    """``text`` with 1-2 words dropped, repeated or replaced by a word of ``pool``; a text of under 3 words, or
    one the edits happen to leave as it was after a few tries, comes back unchanged."""
    if len(text.split()) < 3:
        return text
    for _ in range(8):
        words = text.split()
        for _ in range(rng.randint(1, 2)):
            i, op = rng.randrange(len(words)), rng.choice(["drop", "repeat", "replace"])
            if op == "drop":
                del words[i]
            elif op == "repeat":
                words.insert(i, words[i])
            else:
                words[i] = rng.choice(pool)
        if words != text.split():
            return " ".join(words)
    return text


def copy_records(transcripts: list[str], held_out: set[str], seed: int, share: float,
                 vary: float = 0.0) -> list[dict]:
    """One copy record per distinct transcript not held out (first occurrence order), ``share`` corrupted and
    ``vary`` asked with a random instruction and layout (the others: "TEXT\\nTranscribe the speech.")."""
    rng, ask = random.Random(seed), random.Random(seed + 1)  # ask: its own stream, so vary=0 changes nothing
    seen, texts = set(held_out), []
    for t in transcripts:
        t = " ".join(t.split())
        if t and normalize_text(t) not in seen:
            seen.add(normalize_text(t))
            texts.append(t)
    pool = sorted({w for t in texts for w in t.split() if w.isalpha()})
    out = []
    for i, text in enumerate(texts):
        if rng.random() < share:
            text = corrupt(text, rng, pool)
        human = f"{text}\n{ASR_INSTRUCTION}"
        if ask.random() < vary:
            human = ask.choice(LAYOUTS).format(t=text, i=ask.choice(INSTRUCTIONS))
        out.append({"id": f"copy-{i:05d}",
                    "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": text}]})
    return out


def read_transcripts(folder: Path, names: list[str], required: bool) -> list[str]:
    """The ``speech_asr`` of every record of the named sets (a missing set is an error when ``required``)."""
    out = []
    for name in names:
        path = folder / name
        if not path.is_file():
            if required:
                raise SystemExit(f"{path} not found: make it first (docs/training.md lists the data scripts)")
            continue
        out += [r["speech_asr"] for r in json.loads(path.read_text(encoding="utf-8")) if r.get("speech_asr")]
    return out


def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=here / "nano")
    ap.add_argument("--from", dest="sets", nargs="+", default=DEFAULT_SETS,
                    help="Lyra-format sets in OUT whose transcripts are copied (missing default sets are skipped)")
    ap.add_argument("--corrupt", type=float, default=0.3, help="share of records with 1-2 words edited")
    ap.add_argument("--vary", type=float, default=0.0,
                    help="share of records asked in other words or another layout (stage 4k: 0.5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="route_copy", help="writes OUT/NAME.json")
    args = ap.parse_args()
    if not (0.0 <= args.corrupt <= 1.0 and 0.0 <= args.vary <= 1.0):
        raise SystemExit("--corrupt and --vary must be between 0 and 1")
    transcripts = read_transcripts(args.out, args.sets, required=args.sets != DEFAULT_SETS)
    if not transcripts:
        raise SystemExit(f"no transcripts found in {args.out} ({', '.join(args.sets)}): run make_nano_dataset.py first")
    held = {normalize_text(t) for t in read_transcripts(args.out, HELD_OUT, required=False)}
    records = copy_records(transcripts, held, args.seed, args.corrupt, args.vary)
    (args.out / f"{args.name}.json").write_text(json.dumps(records, indent=1), encoding="utf-8")
    print(f"{args.name}.json: {len(records)} copy records from {len(transcripts)} transcripts "
          f"({len(held)} held-out texts excluded)")


if __name__ == "__main__":
    main()
