"""Plain functions behind the ``lyra vocode`` command: parse a unit string, vocode a unit list."""

from __future__ import annotations

import re

import numpy as np

from .model import InvalidUnitsError
from .plugin import UnitHifiGanVocoder

_BRACKETED = re.compile(r"<\s*(-?\d+)\s*>")
_PLAIN = re.compile(r"^[\s,]*(-?\d+([\s,]+-?\d+)*)?[\s,]*$")


def parse_units(text: str) -> list[int]:
    """``"12 873 4"``, ``"12,873,4"`` or ``"<12><873><4>"`` (the training-data format) -> ``[12, 873, 4]``.

    Anything else (letters, mixed formats, nothing at all) raises :class:`InvalidUnitsError`.
    """
    s = text.strip()
    if s.startswith("<"):
        leftover = _BRACKETED.sub("", s).strip()
        if leftover:
            raise InvalidUnitsError(f"cannot parse units: unexpected text {leftover[:20]!r} between <id> tokens")
        units = [int(m) for m in _BRACKETED.findall(s)]
    elif _PLAIN.match(s):
        units = [int(tok) for tok in re.split(r"[\s,]+", s) if tok]
    else:
        raise InvalidUnitsError(f"cannot parse units from {text[:40]!r}: expected '12 873 4' or '<12><873><4>'")
    if not units:
        raise InvalidUnitsError("no units given: expected '12 873 4' or '<12><873><4>'")
    return units


def vocode_units(units: list[int], checkpoint: str | None, config: str | None = None,
                 dur_prediction: bool = False, speaker: int | None = None) -> tuple[np.ndarray, int]:
    """Vocode one unit sequence -> (float32 waveform (S,) in [-1, 1], sample rate).

    ``checkpoint`` is a fairseq vocoder checkpoint (with ``config``, its config.json) or our ``.safetensors``.
    """
    vocoder = UnitHifiGanVocoder.from_options(UnitHifiGanVocoder.Options(
        checkpoint=checkpoint, config=config, dur_prediction=dur_prediction, speaker=speaker))
    wav = vocoder.synthesize(units)
    return wav.detach().float().cpu().numpy(), vocoder.sample_rate
