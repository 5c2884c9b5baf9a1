"""Device selection: ``auto`` picks CUDA, then Apple MPS, then the CPU; nothing else in the SDK names a device."""

from __future__ import annotations

import torch

from .errors import LyraError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> the best available accelerator, else ``cpu``; any other name is checked and returned."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise LyraError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LyraError(f"device {name!r} asked for, but no CUDA device is available")
    return dev
