"""Unit HiFi-GAN vocoder speed on CPU: real-time factor, and streaming time-to-first-audio vs. offline.

The vocoder has the full Lyra shape (upsample 5*4*4*2*2 = 320, 512 initial channels, resblocks 3/7/11 with
dilations 1/3/5, 1000 units, 16 kHz) with random weights and weight norm folded. For each duration it vocodes
50 units/s of random units offline (RTF = compute time / audio time) and streams the same units arriving
in packets of ``--packet`` units, recording when the first audio chunk is ready and the total stream time.

    .venv/bin/python benchmarks/vocoder_rtf.py [--seconds 5 10 20] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from lyra_unit_hifigan.plugin import UnitHifiGanVocoder


def _time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(seconds: float, voc: UnitHifiGanVocoder, packet: int, repeats: int) -> dict:
    units_per_s = voc.sample_rate / voc.hop_length  # 50 units per second
    n = int(seconds * units_per_s)
    units = torch.randint(0, voc.num_units, (n,), generator=torch.Generator().manual_seed(0)).tolist()
    offline = _time(lambda: voc.synthesize(units, dur_prediction=False), repeats)

    def run_stream() -> tuple[float, float, int]:
        t0 = time.perf_counter()
        first, chunks = None, 0
        for _ in voc.stream(iter([units[i:i + packet] for i in range(0, n, packet)]), dur_prediction=False):
            first = first if first is not None else time.perf_counter() - t0
            chunks += 1
        return first, time.perf_counter() - t0, chunks

    runs = [run_stream() for _ in range(repeats)]
    first = statistics.median(r[0] for r in runs)
    total = statistics.median(r[1] for r in runs)
    return {"audio_s": seconds, "units": n, "offline_s": round(offline, 3), "rtf_offline": round(offline / seconds, 3),
            "stream_first_chunk_s": round(first, 3), "stream_total_s": round(total, 3),
            "rtf_stream": round(total / seconds, 3), "stream_chunks": runs[0][2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[5, 10, 20])
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--packet", type=int, default=5, help="units per arriving packet (5 = 100 ms)")
    ap.add_argument("--chunk", type=int, default=25, help="stream_chunk_units: min frames per streamed chunk")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    voc = UnitHifiGanVocoder.from_options(UnitHifiGanVocoder.Options(stream_chunk_units=args.chunk)).eval()
    voc.synthesize(list(range(50)))  # warm-up
    left, right = voc.receptive_field()
    rows = [bench(s, voc, args.packet, args.repeats) for s in args.seconds]
    meta = {"device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "params_M": round(sum(p.numel() for p in voc.parameters()) / 1e6, 2),
            "context_frames": [left, right], "chunk_frames": args.chunk, "packet_units": args.packet,
            "load_avg_1m": round(os.getloadavg()[0], 2)}
    cols = ["audio_s", "units", "offline_s", "rtf_offline", "stream_first_chunk_s", "stream_total_s", "rtf_stream"]
    print(" | ".join(f"{c:>20}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]:>20}" for c in cols))
    out = {"meta": meta, "results": rows}
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
