"""Training checkpoints: written atomically (temporary folder, then rename), the last K kept, exact resume.

A checkpoint folder ``checkpoints/step-000012/`` holds ``trainable.safetensors`` (every parameter that
trains), ``optimizer.pt`` (loaded with ``weights_only=True``), ``rng.safetensors`` + ``state.json`` (scheduler,
step, data position, Python / NumPy RNG states).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError

PREFIX = "step-"


@dataclass
class TrainState:
    """Where a run is: optimizer steps done, the data position of the next micro-batch, best losses."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"torch": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda{i}"] = s
    return out


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: TrainState, keep_last: int) -> Path:
    """Write ``folder/step-NNNNNN`` atomically and prune all but the newest ``keep_last``."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{PREFIX}{state.step:06d}"
    tmp = folder / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    trainable = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, str(tmp / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    save_file(_rng_tensors(), str(tmp / "rng.safetensors"))
    py_state = random.getstate()
    np_state = np.random.get_state()
    meta = {"train": asdict(state), "scheduler": scheduler.state_dict(),
            "python_rng": [py_state[0], list(py_state[1]), py_state[2]],
            "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    (tmp / "state.json").write_text(json.dumps(meta), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(folder)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of interrupted writes are ignored)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.json").exists())


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> TrainState:
    """Restore trainable weights, optimizer, scheduler and RNG states; returns the train state."""
    try:
        weights = load_file(str(path / "trainable.safetensors"))
        opt_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        rng = load_file(str(path / "rng.safetensors"))
        meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except Exception as exc:  # a broken checkpoint must say which file, never unpickle anything unsafe
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    params = dict(model.named_parameters())
    want = {n for n, p in params.items() if p.requires_grad}
    if set(weights) != want:
        missing, extra = sorted(want - set(weights))[:3], sorted(set(weights) - want)[:3]
        raise CheckpointError(f"checkpoint {path} trains other parameters than this run (missing {missing}, extra {extra})")
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t)
    optimizer.load_state_dict(opt_state)
    scheduler.load_state_dict(meta["scheduler"])
    torch.random.set_rng_state(rng["torch"])
    if torch.cuda.is_available():
        states = [rng[f"cuda{i}"] for i in range(torch.cuda.device_count()) if f"cuda{i}" in rng]
        if states:
            torch.cuda.set_rng_state_all(states)
    v, st, g = meta["python_rng"]
    random.setstate((v, tuple(st), g))
    n = meta["numpy_rng"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    return TrainState(**meta["train"])
