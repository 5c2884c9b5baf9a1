"""The loss-curve picture written at the end of a run."""

from __future__ import annotations

import json
from pathlib import Path


def plot_losses(log_file: Path, out: Path) -> Path | None:
    """Plot every loss term of ``log.jsonl`` against the step into a PNG (None when there is nothing to plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not log_file.exists():
        return None
    series: dict[str, list[tuple[int, float]]] = {}
    for line in log_file.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        for k, v in rec.items():
            if (k in ("loss", "ce", "lcmr", "ctc") or k.startswith("eval_")) and isinstance(v, (int, float)):
                series.setdefault(k, []).append((rec["step"], v))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, pts in sorted(series.items()):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o" if name.startswith("eval_") else None, markersize=3, label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_yscale("log" if min(v for p in series.values() for _, v in p) > 0 else "linear")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
