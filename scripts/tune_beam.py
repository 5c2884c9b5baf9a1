"""Sweep the LM-fused beam's settings on a development set: WER of what the model *hears* per setting.

    python scripts/tune_beam.py examples/data/nano/dev_asr.json examples/data/nano/dev_qa.json \\
        --grid lm_weight=0.2,0.3,0.5 --grid token_bonus=0.5,1.0 [--model M] [--json out.json]

With ``speech_compression.decode: beam`` and ``beam_llm: base``, a spoken question is answered from the word
pieces the beam chose, so the WER of those pieces (:meth:`lyra_sdk.Lyra.hear`) decides how often the answer is
the typed one. This scores every combination of the ``--grid`` values (``speech_compression`` fields) on the
records' speech against their transcripts (``speech_asr``), each clip prompted as a bare spoken question
(``<speech>``, the prompt whose answer the beam serves; ``--own-prompt`` keeps each record's own prompt), with
the same text normalisation as ``lyra eval``. Tune on a development set
(``examples/data/make_nano_dev.py``), never on the held-out sets you report. Prints a table (best first) and
JSON; the frozen encoder runs once per clip, not once per setting.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path


def parse_grid(items: list[str]) -> dict[str, list[float]]:
    """``key=v1,v2`` options -> {key: [v1, v2]} (numbers)."""
    grid: dict[str, list[float]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise SystemExit(f"--grid {item!r}: expected KEY=V1,V2,...")
        try:
            grid[key.strip()] = [float(v) for v in values.split(",")]
        except ValueError:
            raise SystemExit(f"--grid {item!r}: the values must be numbers") from None
    return grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+", type=Path, help="Lyra records with speech and speech_asr (JSON lists)")
    ap.add_argument("--model", default=None, help="a saved model folder or config (default: the embedded lyra-nano)")
    ap.add_argument("--grid", action="append", default=[], help="KEY=V1,V2,...: a speech_compression field")
    ap.add_argument("--own-prompt", action="store_true", help="prompt each clip with its record's own prompt")
    ap.add_argument("--limit", type=int, default=None, help="the first N records of each file")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from lyra_sdk import LyraError
    from lyra_sdk.encoder_cache import EncoderCache
    from lyra_sdk.evaluation import corpus_wer, load_records
    from lyra_sdk.loading import load_lyra
    from lyra_sdk.prompt import Prompt

    try:
        records = [r for f in args.datasets for r in load_records(f, args.limit)]
        model = load_lyra(args.model)[0].eval()
    except LyraError as e:
        raise SystemExit(f"error: {e}") from None
    base = model.config.speech_compression
    if base is None or base.decode != "beam":
        raise SystemExit("error: the model's speech_compression.decode is not beam (pass a model that uses it)")
    grid = parse_grid(args.grid) or {"lm_weight": [base.lm_weight]}
    for key in grid:
        if key not in type(base).model_fields:
            raise SystemExit(f"error: {key!r} is not a speech_compression field")
    prompts = [Prompt(r.prompt if args.own_prompt else "<speech>", {"speech": [r.speech]}) for r in records]
    refs = [r.transcript for r in records]

    # every setting reruns only the encoder's trained top, the projector and the compression (the beam): the
    # frozen encoder's rows are memoised per file, as in training
    model.encoder_cache = EncoderCache(max_bytes=2 << 30)

    rows = []
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        setting = {k: (int(v) if v.is_integer() else v) for k, v in zip(keys, values)}
        try:  # validated as a config would be (an integer field refuses 2.5, a threshold of 0 is refused, ...)
            model.config.speech_compression = type(base).model_validate({**base.model_dump(), **setting})
        except ValueError as e:
            raise SystemExit(f"error: {setting}: {e}") from None
        start = time.time()
        heard = []
        for i, p in enumerate(prompts):
            heard.append(model.hear([p])[0] or "")
            sys.stderr.write(f"\r{setting}: {i + 1}/{len(prompts)}")
        wer = corpus_wer(refs, heard)
        rows.append({**setting, "heard_wer": round(wer, 4), "seconds": round(time.time() - start, 1)})
        sys.stderr.write(f"  heard WER {wer:.1%}\n")
    model.config.speech_compression = base
    rows.sort(key=lambda r: r["heard_wer"])
    width = max(len(json.dumps({k: r[k] for k in keys})) for r in rows)
    print(f"{'setting':<{width}}  heard WER  s")
    for r in rows:
        print(f"{json.dumps({k: r[k] for k in keys}):<{width}}  {r['heard_wer']:>9.1%}  {r['seconds']:.0f}")
    result = {"model": args.model or "lyra-nano (embedded)", "records": len(records), "files": [str(f) for f in args.datasets],
              "prompt": "own" if args.own_prompt else "<speech>", "threads": torch.get_num_threads(), "rows": rows}
    print(json.dumps(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
