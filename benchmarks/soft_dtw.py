"""soft-DTW forward + backward: lyra_sdk.soft_dtw vs tslearn, pysdtw and a plain torch autograd loop.

Each implementation gets the same float32 cost tensor (B, L, S), gamma = 0.1, and computes the values and the
gradient of their sum (a fresh leaf tensor every run). tslearn (``SoftDTWLossPyTorch``) and pysdtw
(``SoftDTW(use_cuda=False)``) are the published numba kernels, given the cost through an identity
``dist_func``; "torch loop" is a plain anti-diagonal wavefront in torch with autograd through every diagonal.
All are warmed up first (numba JIT), then timed round-robin in a shuffled order (so load changes hit all alike;
the slow torch loop runs afterwards, a quarter of the repeats). The table shows the median and the min over the
repeats and how many times faster ours is (median / median); the values of every implementation are checked
against ours. On a CUDA machine ours also runs on the GPU.

    .venv/bin/python benchmarks/soft_dtw.py [--repeats 15] [--threads N] [--json out.json]

Needs ``pip install tslearn pysdtw`` (with ``--no-deps`` if pip would touch torch: they need only numba, numpy,
scipy, scikit-learn, joblib).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable

import numba
import torch

from lyra_sdk.mechanisms import soft_dtw
from lyra_sdk.mechanisms._soft_dtw_wavefront import skew

SHAPES = [(8, 300, 64), (1, 3000, 300)]
GAMMA = 0.1
TORCH_LOOP_LIMIT_S = 3.0


def torch_loop(cost: torch.Tensor, gamma: float) -> torch.Tensor:
    """Plain torch soft-DTW: one autograd graph over the anti-diagonals (a large finite value stands for inf)."""
    D = cost.transpose(1, 2) if cost.shape[1] > cost.shape[2] else cost
    B, L, S = D.shape
    big = 1e10
    diagonals = skew(D).unbind(1)  # L + S - 1 tensors (B, L); one unbind keeps the backward from O(n^2) slicing
    i = torch.arange(1, L + 1)
    prev2 = torch.cat([D.new_zeros(B, 1), D.new_full((B, L), big)], 1)  # diagonal 0: R(0, 0) = 0
    prev = D.new_full((B, L + 1), big)
    for dp in range(2, L + S + 1):
        up, left, dg = prev[:, :-1], prev[:, 1:], prev2[:, :-1]
        soft = -gamma * torch.logsumexp(torch.stack([up, left, dg]) / -gamma, 0)
        valid = (dp - i >= 1) & (dp - i <= S)
        new = torch.where(valid, diagonals[dp - 2] + soft, big)
        prev2, prev = prev, torch.cat([D.new_full((B, 1), big), new], 1)
    return prev[:, L]


def implementations() -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """name -> fn(cost leaf) -> values (B,); every fn is differentiable with respect to the cost."""
    impls: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"lyra_sdk": lambda c: soft_dtw(c, GAMMA)}
    try:
        from tslearn.metrics import SoftDTWLossPyTorch

        ts = SoftDTWLossPyTorch(gamma=GAMMA, dist_func=lambda x, _y: x)
        impls["tslearn"] = lambda c: ts(c, c.new_empty(c.shape[0], c.shape[2], c.shape[2]))
    except ImportError:
        print("tslearn not installed: skipped")
    try:
        import pysdtw

        ps = pysdtw.SoftDTW(gamma=GAMMA, dist_func=lambda x, _y: x, use_cuda=False)
        impls["pysdtw"] = lambda c: ps(c, c.new_empty(c.shape[0], c.shape[2], c.shape[2]))
    except ImportError:
        print("pysdtw not installed: skipped")
    impls["torch loop"] = lambda c: torch_loop(c, GAMMA)
    return impls


def run_once(fn: Callable[[torch.Tensor], torch.Tensor], cost: torch.Tensor) -> tuple[float, torch.Tensor]:
    leaf = cost.clone().requires_grad_(True)
    if leaf.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    values = fn(leaf)
    values.sum().backward()
    if leaf.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0, values.detach().cpu()


def bench_shape(shape: tuple[int, int, int], impls: dict, repeats: int) -> dict:
    cost = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {}
    values: dict[str, torch.Tensor] = {}
    notes: dict[str, str] = {}
    active = dict(impls)
    for name, fn in impls.items():  # warm-up (JIT) and the values
        t, values[name] = run_once(fn, cost)
        if name == "torch loop" and t > TORCH_LOOP_LIMIT_S:
            notes[name] = f"one run took {t:.1f} s > {TORCH_LOOP_LIMIT_S:.0f} s: not repeated"
            times[name] = [t]
            del active[name]
    # round-robin in a shuffled order, so that load changes and the after-effects of one implementation (spinning
    # OpenMP threads, throttling) hit all alike; the much slower torch loop runs on its own afterwards
    loop = active.pop("torch loop", None)
    rng = random.Random(0)
    for _ in range(repeats):
        for name in rng.sample(list(active), len(active)):
            times.setdefault(name, []).append(run_once(active[name], cost)[0])
    if loop is not None:
        times.setdefault("torch loop", []).extend(run_once(loop, cost)[0] for _ in range(max(1, repeats // 4)))
    ours = values["lyra_sdk"].double()
    rows = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rows[name] = {
            "median_ms": round(med * 1e3, 3), "min_ms": round(min(ts) * 1e3, 3), "runs": len(ts),
            "max_rel_diff_vs_ours": float(((values[name].double() - ours).abs() / ours.abs()).max()),
        }
    base = rows["lyra_sdk"]["median_ms"]
    for r in rows.values():
        r["ours_faster_x"] = round(r["median_ms"] / base, 2)
    result = {"shape": list(shape), "results": rows, "notes": notes}
    if torch.cuda.is_available():
        gpu_cost = cost.cuda()
        run_once(impls["lyra_sdk"], gpu_cost)
        gt = [run_once(impls["lyra_sdk"], gpu_cost)[0] for _ in range(repeats)]
        result["gpu"] = {"device": torch.cuda.get_device_name(), "median_ms": round(statistics.median(gt) * 1e3, 3),
                         "cpu_over_gpu_x": round(base / (statistics.median(gt) * 1e3), 2)}
    return result


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_table(results: list[dict]) -> None:
    head = ["shape (B, L, S)", "implementation", "median ms", "min ms", "ours faster x", "max rel diff"]
    lines = []
    for res in results:
        for name, r in res["results"].items():
            lines.append([str(tuple(res["shape"])), name, f"{r['median_ms']:.2f}", f"{r['min_ms']:.2f}",
                          f"{r['ours_faster_x']:.2f}", f"{r['max_rel_diff_vs_ours']:.1e}"])
        if "gpu" in res:
            g = res["gpu"]
            lines.append([str(tuple(res["shape"])), f"lyra_sdk on {g['device']}", f"{g['median_ms']:.2f}", "",
                          f"CPU/GPU {g['cpu_over_gpu_x']:.1f}", ""])
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="soft-DTW forward + backward")
        for h in head:
            table.add_column(h, justify="left" if h in ("implementation", "shape (B, L, S)") else "right")
        for line in lines:
            table.add_row(*line)
        Console(width=110).print(table)
    except ImportError:
        print(" | ".join(head))
        for line in lines:
            print(" | ".join(line))
    for res in results:
        for name, note in res["notes"].items():
            print(f"{tuple(res['shape'])} {name}: {note}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None, help="numba threads for every numba implementation")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    if args.threads:
        numba.set_num_threads(args.threads)
    impls = implementations()
    results = [bench_shape(s, impls, args.repeats) for s in SHAPES]
    for res in results:
        others = [r["median_ms"] for n, r in res["results"].items() if n in ("tslearn", "pysdtw")]
        if others:
            res["ours_faster_than_best_numba_x"] = round(min(others) / res["results"]["lyra_sdk"]["median_ms"], 2)
    meta = {"numba_threads": numba.get_num_threads(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "numba": numba.__version__, "cpu": cpu_name(),
            "cores": os.cpu_count(), "gamma": GAMMA, "dtype": "float32", "repeats": args.repeats,
            "load_avg_1m": round(os.getloadavg()[0], 2), "cuda": torch.cuda.is_available()}
    print_table(results)
    out = {"meta": meta, "shapes": results}
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
