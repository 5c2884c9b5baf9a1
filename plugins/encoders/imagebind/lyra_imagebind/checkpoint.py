"""Reading the audio branch out of an ImageBind checkpoint (``imagebind_huge.pth`` or a tensor-for-tensor copy).

The file is a flat state dict of the whole ``ImageBindModel`` (every modality). Only the audio keys are read:
``modality_preprocessors.audio.*``, ``modality_trunks.audio.*``, ``modality_heads.audio.*`` and
``modality_postprocessors.audio.*`` map onto :class:`~lyra_imagebind.model.ImageBindAudio`'s ``preprocessor``,
``trunk``, ``head`` and ``postprocessor``; other modalities are ignored. A ``.pth`` / ``.pt`` file is read with
``torch.load(weights_only=True)`` (memory-mapped, so the other modalities cost no memory); ``.safetensors``
with safetensors (only the audio tensors are read). The architecture is read from the tensor shapes; the head
count and the stem stride are not stored and come from the options.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from lyra_sdk.errors import CheckpointError

from .model import ImageBindAudioConfig

log = logging.getLogger(__name__)

PREFIXES = {
    "modality_preprocessors.audio.": "preprocessor.",
    "modality_trunks.audio.": "trunk.",
    "modality_heads.audio.": "head.",
    "modality_postprocessors.audio.": "postprocessor.",
}
"""Checkpoint prefix -> prefix in :class:`ImageBindAudio`."""


def to_model_key(key: str) -> str | None:
    """Checkpoint key -> our key, or None for another modality's key."""
    for theirs, ours in PREFIXES.items():
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return None


def to_checkpoint_key(key: str) -> str:
    """Our key -> the checkpoint's key (the inverse of :func:`to_model_key`)."""
    for theirs, ours in PREFIXES.items():
        if key.startswith(ours):
            return theirs + key[len(ours):]
    raise KeyError(key)


def read_audio_state_dict(path: Path) -> dict[str, Tensor]:
    """The audio tensors of an ImageBind checkpoint file, in our key names."""
    if not path.is_file():
        raise CheckpointError(f"ImageBind checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return {to_model_key(k): f.get_tensor(k) for k in f.keys() if to_model_key(k) is not None}
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a legacy (non-zip) torch file cannot be memory-mapped
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickler / zip / safetensors errors come in many types
        raise CheckpointError(f"cannot read {path} as a torch or safetensors state dict: "
                              f"{type(exc).__name__}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]  # some training checkpoints wrap the state dict
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a state dict (got {type(data).__name__})")
    out = {}
    for key, value in data.items():
        ours = to_model_key(str(key))
        if ours is not None:
            out[ours] = value.clone() if isinstance(value, Tensor) else value  # detach from the mmap
    if not out:
        raise CheckpointError(f"{path} holds no audio keys (modality_preprocessors.audio.*, modality_trunks.audio.*, "
                              "...): not an ImageBind checkpoint with an audio branch")
    return out


def infer_config(sd: dict[str, Tensor], num_heads: int, stride: int, num_mel_bins: int, target_length: int,
                 source: str) -> ImageBindAudioConfig:
    """The architecture from tensor shapes; ``num_heads`` and ``stride`` (not stored) from the caller.

    ``num_mel_bins`` / ``target_length`` must give as many patches as the stored positional embedding has.
    """
    def need(key: str) -> Tensor:
        if key not in sd:
            raise CheckpointError(f"{source}: missing key {to_checkpoint_key(key)!r}")
        return sd[key]

    embed_dim = int(need("preprocessor.cls_token").shape[-1])
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"trunk\.blocks\.(\d+)\.", k))}
    if not blocks:
        raise CheckpointError(f"{source}: no trunk blocks (modality_trunks.audio.blocks.N.*)")
    kernel = int(need("preprocessor.rgbt_stem.proj.weight").shape[-1])
    scale = need("postprocessor.1.log_logit_scale")
    try:
        config = ImageBindAudioConfig(
            embed_dim=embed_dim, num_blocks=max(blocks) + 1, num_heads=num_heads,
            mlp_dim=int(need("trunk.blocks.0.mlp.fc1.weight").shape[0]),
            out_embed_dim=int(need("head.2.weight").shape[0]), num_mel_bins=num_mel_bins,
            target_length=target_length, kernel_size=kernel, stride=stride,
            logit_scale=round(math.exp(float(scale)), 4))  # only the init value: the buffer is loaded as stored
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    stored = int(need("preprocessor.pos_embedding_helper.pos_embed").shape[1])
    if stored != config.num_tokens:
        raise CheckpointError(f"{source}: the positional embedding has {stored} tokens but num_mel_bins="
                              f"{num_mel_bins}, target_length={target_length}, stride={stride} give "
                              f"{config.num_tokens} (1 cls + {config.patch_grid[0]} x {config.patch_grid[1]} patches)")
    return config


def checkpoint_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """``module``'s weights under ImageBind's checkpoint names (e.g. to write a test fixture)."""
    return {to_checkpoint_key(k): v for k, v in module.state_dict().items()}


__all__ = ["PREFIXES", "checkpoint_state_dict", "infer_config", "read_audio_state_dict",
           "to_checkpoint_key", "to_model_key"]
