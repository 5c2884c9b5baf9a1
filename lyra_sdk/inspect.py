"""Model inspection: parameter counts per component (works on meta-device models)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ComponentParams:
    """Parameter counts of one component."""

    path: str
    plugin: str
    total: int
    trainable: int


def parameter_report(model: Any) -> list[ComponentParams]:
    """One row per component (shared tensors counted once per component), in config order."""
    rows = []
    for path, spec, module in model.component_specs():
        seen: set[int] = set()
        total = trainable = 0
        for p in module.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
        rows.append(ComponentParams(path, spec.plugin, total, trainable))
    return rows


def human(n: int) -> str:
    """1234567 -> '1.23M'."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)
