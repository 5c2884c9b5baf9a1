"""Discrete speech units as text: ``"12 873 4"``, ``"12,873,4"`` or Lyra's data format ``"<12><873><4>"``."""

from __future__ import annotations

import re

from .errors import LyraError

_BRACKETED = re.compile(r"<(\d+)>")


def parse_units(text: str) -> list[int]:
    """Parse a unit string; anything that is not a list of non-negative integers is a clear error."""
    s = text.strip()
    if not s:
        raise LyraError("empty unit list: give units like '12 873 4' or '<12><873><4>'")
    if s.startswith("<"):
        units = _BRACKETED.findall(s)
        if "".join(f"<{u}>" for u in units) != re.sub(r"\s+", "", s):
            raise LyraError(f"cannot parse units {text[:40]!r}: expected '<12><873><4>'")
        return [int(u) for u in units]
    parts = [p for p in re.split(r"[\s,]+", s) if p]
    bad = [p for p in parts if not p.isdigit()]
    if bad:
        raise LyraError(f"cannot parse units: {bad[:3]} are not non-negative integers")
    return [int(p) for p in parts]


def format_units(units: list[int]) -> str:
    """Units in Lyra's data format ``<12><873><4>``."""
    return "".join(f"<{u}>" for u in units)
