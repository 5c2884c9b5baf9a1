"""Reading Qwen2-VL weights from an HF-format folder: ``config.json`` plus ``*.safetensors`` (one file or shards
with ``model.safetensors.index.json``). Only safetensors are read (never pickles); only the tensors a component
asks for are loaded, so the vision encoder never reads the LLM's weights and vice versa.

Key layouts met in the wild: transformers 4.x Qwen2-VL folders (``model.layers.N.*``, ``model.embed_tokens``,
``lm_head``, ``visual.*``), transformers 5 folders (``model.language_model.*``, ``model.visual.*``, ``lm_head``)
and original Lyra folders (4.x layout plus speech tower / projector keys, which are ignored here).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lyra_sdk.errors import CheckpointError
from lyra_sdk.weights import read_json_config

log = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's ``config.json`` as a dict; CheckpointError when missing or malformed."""
    return read_json_config(folder, expected="an HF-format Qwen2-VL folder")


def _shards(folder: Path) -> list[Path]:
    index = folder / INDEX_FILE
    if index.exists():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index} is malformed: {exc}") from None
        return [folder / name for name in sorted(set(weight_map.values()))]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder} holds no *.safetensors weights (pickled .bin files are not read)")
    return files


def read_tensors(folder: Path, rename: Callable[[str], str | None]) -> dict[str, torch.Tensor]:
    """Tensors of every shard whose key ``rename`` maps to a name (None = skip), keyed by that name."""
    from safetensors import SafetensorError, safe_open

    out: dict[str, torch.Tensor] = {}
    for shard in _shards(folder):
        if not shard.exists():
            raise CheckpointError(f"weight shard listed in {INDEX_FILE} is missing: {shard}")
        try:
            with safe_open(str(shard), framework="pt") as f:
                for key in f.keys():
                    name = rename(key)
                    if name is not None:
                        out[name] = f.get_tensor(key)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"cannot read {shard}: {exc}") from None
    return out


