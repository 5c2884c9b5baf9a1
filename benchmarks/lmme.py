"""LMME benchmark: prefill time, peak memory and KV-cache size with extraction on vs off as media tokens grow.

A tiny-but-not-trivial random Qwen2 (hidden 256, 8 layers, 8 heads, 2 KV heads) on CPU, fp32, batch 1:
64 text tokens, N media tokens, 32 text-query tokens. Each (N, setting) runs in its own subprocess so the
peak resident memory (``resource.ru_maxrss``, which sees torch's allocations) is measured per setting: the
reported peak is the growth of the high-water mark during prefill over the mark after building the model
and inputs. "off" is the same layer-driving code with keep=1.0 (tests prove it equals the HF forward).

    OMP_NUM_THREADS=1 python benchmarks/lmme.py --sizes 1024 2048 4096 8192 --json out.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def worker(args: argparse.Namespace) -> dict:
    """One setting in this process: build, warm up, time ``repeats`` prefills, report peak memory growth."""
    import torch
    from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM

    from lyra_sdk.mechanisms.extraction import ExtractionOptions, extract_forward

    torch.manual_seed(0)
    cfg = Qwen2Config(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=8,
                      num_key_value_heads=2, intermediate_size=4 * args.hidden, vocab_size=1000,
                      max_position_embeddings=65536)
    cfg._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(cfg).eval()
    n = args.media
    length = 64 + n + 32
    emb = torch.randn(1, length, args.hidden)
    mask = torch.ones(1, length, dtype=torch.long)
    pos = torch.arange(length)[None]
    media = torch.zeros(1, length, dtype=torch.bool)
    media[0, 64:64 + n] = True
    opts = ExtractionOptions(keep=args.keep, gap=args.gap, min_keep=32)

    def prefill():
        cache = DynamicCache()
        with torch.no_grad():
            res = extract_forward(model, emb, mask, pos, media, opts, cache=cache)
        return res, cache

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res, cache = prefill()  # warm-up; also the memory measurement (first prefill sets the high-water mark)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    del res, cache
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res, cache = prefill()
        times.append(time.perf_counter() - t0)
    kv_bytes = sum(cache.layers[i].keys.numel() + cache.layers[i].values.numel() for i in range(args.layers)) * 4
    return {"media": n, "keep": args.keep, "prefill_s": min(times), "peak_mb": peak / 1024,
            "kv_mb": kv_bytes / 2**20, "final_tokens": int(res.attention_mask.sum()),
            "cache_lengths": [cache.get_seq_length(i) for i in range(args.layers)]}


def main() -> None:
    """Run every (size, on/off) setting in a subprocess; print a markdown table and optionally write JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--gap", type=int, default=2)
    p.add_argument("--keep", type=float, default=0.7)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--media", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    rows = []
    for n in args.sizes:
        for keep in (1.0, args.keep):
            cmd = [sys.executable, __file__, "--worker", "--media", str(n), "--keep", str(keep), "--hidden",
                   str(args.hidden), "--layers", str(args.layers), "--gap", str(args.gap), "--repeats", str(args.repeats)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"hidden {args.hidden}, {args.layers} layers, gap {args.gap}, keep {args.keep}, min_keep 32, CPU fp32, batch 1")
    print("| media tokens | LMME | prefill s | peak RSS growth MB | KV cache MB | tokens after last prune |")
    print("|---:|:---|---:|---:|---:|---:|")
    for r in rows:
        tag = "off" if r["keep"] >= 1.0 else f"on ({r['keep']})"
        print(f"| {r['media']} | {tag} | {r['prefill_s']:.3f} | {r['peak_mb']:.0f} | {r['kv_mb']:.1f} | "
              f"{r['final_tokens']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
