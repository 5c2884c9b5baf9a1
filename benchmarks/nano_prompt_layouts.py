"""Does a model transcribe as well whatever way the prompt asks? WER per prompt layout on held-out sentences.

    python benchmarks/nano_prompt_layouts.py --asr examples/data/nano/asr_eval.json --limit 12 [--model M]

Each record's own human turn is replaced by each of :data:`LAYOUTS` in turn (the speech on its own line before
the instruction, which ``lyra run --speech F --prompt "..."`` builds; a space instead of the newline; the
instruction first; other wordings), and :func:`lyra_sdk.evaluation.evaluate_asr` scores the transcripts. A
route that copies only the layout it was trained on shows as a jump in WER, typically because it appends or
echoes the instruction. Prints a table and a JSON line. About 80 s per layout for 12 clips on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

LAYOUTS = ["<speech>\nTranscribe the speech.", "<speech> Transcribe the speech.", "Transcribe the speech.\n<speech>",
           "Transcribe this audio: <speech>", "<speech>\nWrite down what is said.",
           "<speech>\nPlease transcribe this recording."]


def main() -> None:
    from lyra_sdk.evaluation import evaluate_asr, load_records
    from lyra_sdk.loading import load_lyra

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--asr", type=Path, required=True, help="Lyra-format records with speech and speech_asr")
    ap.add_argument("--model", type=Path, default=None, help="saved model folder (default: the embedded model)")
    ap.add_argument("--limit", type=int, default=12, help="first N records")
    ap.add_argument("--batch-size", type=int, default=12)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    args = ap.parse_args()
    records = load_records(args.asr, args.limit)
    lyra, _ = load_lyra(args.model, None, [])
    rows = []
    for layout in LAYOUTS:
        res = evaluate_asr(lyra, [dataclasses.replace(r, prompt=layout) for r in records], args.batch_size,
                           args.max_new_tokens)
        rows.append({"layout": layout, "wer": round(res.wer, 4), "example": res.rows[0]["hypothesis"]})
        print(f"{layout!r:48} WER {res.wer:6.1%}  e.g. {res.rows[0]['hypothesis']!r}", flush=True)
    print(json.dumps({"model": str(args.model or "embedded default"), "records": len(records), "layouts": rows}))


if __name__ == "__main__":
    main()
