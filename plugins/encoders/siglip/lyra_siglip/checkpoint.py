"""Reading a SigLIP vision tower from an HF-format folder.

The folder holds ``config.json`` and weights: ``model.safetensors``, sharded ``*.safetensors`` with
``model.safetensors.index.json``, or ``pytorch_model.bin`` (read with ``torch.load(weights_only=True)``).
Accepted models:

* ``SiglipVisionModel`` (``model_type: siglip_vision_model``): keys ``vision_model.*`` (transformers 4.x) or
  bare ``embeddings.* / encoder.* / post_layernorm.*`` (transformers 5.x);
* ``SiglipModel`` (``model_type: siglip``; the vision fields under ``vision_config``): keys ``vision_model.*``;
  the text tower, ``logit_scale`` and ``logit_bias`` are ignored.

The pooling ``head.*`` (unused for patch tokens) and the legacy ``embeddings.position_ids`` buffer are skipped;
any other key outside the tower, a missing key or a shape mismatch is a :class:`CheckpointError` naming the key.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lyra_sdk.errors import CheckpointError
from lyra_sdk.weights import read_json_config

from .model import SiglipVisionConfig

log = logging.getLogger(__name__)

MODEL_TYPES = ("siglip_vision_model", "siglip")
SKIPPED = ("head.", "embeddings.position_ids")
"""Tower-relative key prefixes that are read past: the attention-pooling head and an old non-weight buffer."""


def read_config(folder: Path) -> SiglipVisionConfig:
    """The vision architecture from ``folder/config.json`` (fields missing there take transformers' defaults)."""
    path = folder / "config.json"
    data = read_json_config(folder, expected="an HF SiglipVisionModel or SiglipModel folder")
    model_type = data.get("model_type")
    if model_type not in MODEL_TYPES:
        raise CheckpointError(f"{path}: model_type {model_type!r} is not a SigLIP model; expected one of {MODEL_TYPES}")
    vision = (data.get("vision_config") or {}) if model_type == "siglip" else data
    try:
        return SiglipVisionConfig.from_dict(vision, strict=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{index} is malformed: {exc}") from None
        return [folder / n for n in names]
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    if (folder / "pytorch_model.bin").exists():
        return [folder / "pytorch_model.bin"]
    raise CheckpointError(f"{folder} holds no weights (model.safetensors, shards + index, or pytorch_model.bin)")


def _read(path: Path) -> dict[str, Tensor]:
    if not path.exists():
        raise CheckpointError(f"weight file listed but missing: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        data: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors / unpickler errors come in many types
        raise CheckpointError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return data


def vision_state_dict(tensors: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """Checkpoint tensors -> the tower's state dict (keys relative to :class:`SiglipVisionTransformer`)."""
    prefixed = any(k.startswith("vision_model.") for k in tensors)
    out: dict[str, Tensor] = {}
    unexpected = []
    for key, value in tensors.items():
        if prefixed:
            if not key.startswith("vision_model."):
                continue  # text tower, logit_scale / logit_bias of a SiglipModel
            key = key.removeprefix("vision_model.")
        if key.startswith(SKIPPED):
            continue
        if key.startswith(("embeddings.", "encoder.", "post_layernorm.")):
            out[key] = value
        else:
            unexpected.append(key)
    if unexpected:
        unexpected.sort()
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{source}: unexpected key {unexpected[0]!r}{more}: not a SigLIP vision tower")
    return out


def load_folder(folder: Path) -> tuple[SiglipVisionConfig, dict[str, Tensor]]:
    """(architecture, tower state dict) of an HF SigLIP folder."""
    config = read_config(folder)
    tensors: dict[str, Tensor] = {}
    for path in _weight_files(folder):
        tensors.update(_read(path))
    log.info("siglip: read %d tensors from %s", len(tensors), folder)
    return config, vision_state_dict(tensors, str(folder))


__all__ = ["MODEL_TYPES", "load_folder", "read_config", "vision_state_dict"]
