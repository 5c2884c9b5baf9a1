"""Which held-out words a model misses: hit rates by word kind and by how often training voiced the word.

    lyra eval --model M --asr examples/data/nano/asr_eval.json --json out.json
    python benchmarks/nano_word_errors.py out.json --train examples/data/nano/stage2_all_train.json \
        examples/data/nano/stage1_wordlists_common4.json ...

Each reference word of every evaluated clip is aligned (jiwer, after the evaluation's own text normalisation)
with what the model heard (``--field heard``: the beam's word pieces, the text a spoken question is answered
from) or wrote (``--field hypothesis``: the transcript), and counts as a hit when the alignment keeps it. Words
are grouped by how the LLM's tokenizer spells them (``short``: under 3 letters; ``piece <12k`` / ``piece 12k+``:
one whole-word piece, by its rank among the tokenizer's whole-word pieces, the order make_nano_wordlists.py
draws in; ``split``: 2 or more pieces) and by the times the ``--train`` transcripts contain them. Prints a table
and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples" / "data"))

BINS = [(0, 0), (1, 5), (6, 20), (21, 100), (101, 10**9)]
BIN_LABELS = [f"{lo}-{hi}" if hi < 10**9 else f">{lo - 1}" for lo, hi in BINS]


def word_hits(rows: list[dict], field: str) -> list[tuple[str, bool]]:
    """(reference word, kept?) for every reference word of ``rows``, aligned with ``row[field]``."""
    import jiwer

    from lyra_sdk.evaluation import normalize_text

    out = []
    for row in rows:
        ref = normalize_text(row["reference"]).split()
        hyp = normalize_text(row.get(field) or "") or "<empty>"
        if not ref:
            continue
        kept = [False] * len(ref)
        for chunk in jiwer.process_words(" ".join(ref), hyp).alignments[0]:
            if chunk.type == "equal":
                for i in range(chunk.ref_start_idx, chunk.ref_end_idx):
                    kept[i] = True
        out.extend(zip(ref, kept, strict=True))
    return out


def word_kind(word: str, tokenizer, rank: dict[str, int]) -> str:
    """How the tokenizer spells ``word`` (either case): short, piece <12k, piece 12k+ or split."""
    if len(word) < 3:
        return "short"
    forms = {word, word.capitalize()}
    ranks = [rank[f] for f in forms if f in rank]
    if ranks:
        return "piece <12k" if min(ranks) < 12000 else "piece 12k+"
    if any(len(tokenizer.encode(" " + f)) == 1 for f in forms):
        return "piece (other)"  # a single piece that is not a plain word of 3+ letters (e.g. with an apostrophe)
    return "split"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("eval_json", type=Path, help="lyra eval --json output with an 'asr' section")
    ap.add_argument("--train", type=Path, nargs="*", default=[], help="training records (speech_asr) to count")
    ap.add_argument("--field", choices=["heard", "hypothesis"], default="heard")
    ap.add_argument("--config", default=str(HERE.parent / "examples" / "configs" / "lyra-nano.yaml"))
    args = ap.parse_args()

    from make_nano_wordlists import whole_pieces

    from lyra_sdk import Lyra
    from lyra_sdk.evaluation import normalize_text

    data = json.loads(args.eval_json.read_text(encoding="utf-8"))
    if "asr" not in data:
        raise SystemExit(f"{args.eval_json}: no 'asr' rows (run lyra eval with --asr and --json)")
    if args.field == "heard" and any(r.get("heard") is None for r in data["asr"]):
        raise SystemExit(f"{args.eval_json}: no heard text (the model does not use CTC compression); "
                         "use --field hypothesis")
    seen: Counter[str] = Counter()
    for path in args.train:
        for rec in json.loads(path.read_text(encoding="utf-8")):
            seen.update(normalize_text(rec.get("speech_asr") or "").split())
    tokenizer = Lyra.from_config(args.config).llm.tokenizer
    rank = {w: i for i, w in enumerate(whole_pieces(tokenizer))}

    kinds: dict[str, list[int]] = {}
    bins: dict[str, list[int]] = {}
    for word, kept in word_hits(data["asr"], args.field):
        k = kinds.setdefault(word_kind(word, tokenizer, rank), [0, 0])
        k[0] += 1
        k[1] += kept
        n = seen[word]
        label = next(lab for lab, (lo, hi) in zip(BIN_LABELS, BINS, strict=True) if lo <= n <= hi)
        b = bins.setdefault(label, [0, 0])
        b[0] += 1
        b[1] += kept
    total = sum(v[0] for v in kinds.values())
    sys.stdout.write(f"{'group':<22}{'words':>7}{'share':>8}{'hit rate':>10}\n")
    for title, table in (("kind", dict(sorted(kinds.items()))),
                         ("times in training", {b: bins[b] for b in BIN_LABELS if b in bins})):
        sys.stdout.write(f"-- {title}\n")
        for label, (n, hit) in table.items():
            sys.stdout.write(f"{label:<22}{n:>7}{n / total:>8.1%}{hit / n:>10.1%}\n")
    sys.stdout.write(json.dumps({"field": args.field, "words": total,
                                 "kind": {k: {"n": n, "hit": round(h / n, 4)} for k, (n, h) in kinds.items()},
                                 "times_in_training": {k: {"n": n, "hit": round(h / n, 4)}
                                                       for k, (n, h) in bins.items()}}) + "\n")


if __name__ == "__main__":
    main()
