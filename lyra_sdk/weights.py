"""Strict weight loading shared by every plugin: one place that decides what a mismatch error says."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from torch import Tensor, nn

from .errors import CheckpointError

log = logging.getLogger(__name__)


def _more(keys: list[str]) -> str:
    return f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], source: str, *,
                optional: Collection[str] = (), key_name: Callable[[str], str] = lambda k: k) -> None:
    """Copy ``state_dict`` into ``module``, refusing any missing key (except ``optional`` ones), unexpected key
    or shape mismatch with a :class:`~lyra_sdk.CheckpointError` that names the keys as the checkpoint spells
    them (``key_name`` maps a module key back to the checkpoint's name)."""
    expected = module.state_dict()
    missing = sorted(k for k in expected if k not in state_dict and k not in optional)
    unexpected = sorted(k for k in state_dict if k not in expected)
    parts = [f"{label} key {key_name(keys[0])!r}{_more(keys)}"
             for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    if parts:
        raise CheckpointError(f"{source}: {'; '.join(parts)}")
    for key, value in state_dict.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(f"{source}: shape mismatch for {key_name(key)!r}: checkpoint {tuple(value.shape)}, "
                                  f"model {tuple(expected[key].shape)}")
    if any(t.is_meta for t in expected.values()):  # built on the meta device (shapes only): keys checked, no copy
        return
    module.load_state_dict(dict(state_dict), strict=not optional)
    log.info("loaded %d tensors from %s", len(state_dict), source)


def read_json_config(folder: Path, name: str = "config.json", expected: str = "a model folder") -> dict:
    """``folder/name`` as a JSON object; a missing folder or file, bad JSON or a non-object is a CheckpointError."""
    path = Path(folder) / name
    if not Path(folder).is_dir():
        raise CheckpointError(f"model folder not found: {folder}")
    if not path.exists():
        raise CheckpointError(f"{folder} has no {name} (expected {expected})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data
