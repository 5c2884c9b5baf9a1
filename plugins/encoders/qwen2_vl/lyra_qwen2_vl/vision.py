"""The ``qwen2-vl-vision`` encoder: Qwen2-VL's vision transformer (with its 2x2 patch merger) for images and videos.

Its output width is the merger's output, the LLM's hidden size, so Lyra pairs it with the ``identity``
projector. Each item (an image or a video) becomes one output row of ``t * (h / 2) * (w / 2)`` tokens, rows are
padded to the longest item, and ``grids`` gives each row's LLM token grid (t, h / 2, w / 2) for M-RoPE.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Self

import numpy as np
import torch
from pydantic import Field, model_validator

from lyra_sdk.errors import CheckpointError, ConfigError, MediaError
from lyra_sdk.interfaces import Encoder, Features, MediaEmbeddings, Modality, PluginOptions
from lyra_sdk.media.video import DEFAULT_MAX_FRAMES, VideoClip, sample_indices
from lyra_sdk.paths import resolve_path

from . import processing as P
from lyra_sdk.weights import load_strict

from .checkpoint import read_config, read_tensors

log = logging.getLogger(__name__)

VISION_FIELDS = ("depth", "embed_dim", "hidden_size", "hidden_act", "mlp_ratio", "num_heads", "in_channels",
                 "patch_size", "spatial_merge_size", "temporal_patch_size", "initializer_range", "rope_parameters")
"""The ``Qwen2VLVisionConfig`` fields that define the architecture (what ``saved_options`` keeps)."""


def vision_key(key: str) -> str | None:
    """Checkpoint key -> vision-tower key: ``visual.*`` (transformers 4.x) or ``model.visual.*`` (5.x); else None."""
    for prefix in ("model.visual.", "visual."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return None


class Qwen2VLVisionEncoder(Encoder):
    """Qwen2-VL's vision tower as a Lyra image/video encoder (transformers' ``Qwen2VisionTransformerPretrainedModel``).

    Give ``config`` (``Qwen2VLVisionConfig`` fields) for random weights, or ``path`` (an HF Qwen2-VL folder, or
    an original Lyra folder) to load the ``visual.*`` / ``model.visual.*`` weights strictly.
    """

    class Options(PluginOptions):
        """Options of ``qwen2-vl-vision``."""

        path: str | None = Field(None, description="HF Qwen2-VL folder: config.json (vision_config) + safetensors")
        config: dict[str, Any] | None = Field(None, description="Qwen2VLVisionConfig fields, for random weights")
        min_pixels: int = Field(P.IMAGE_MIN_PIXELS, gt=0, description="pixel floor of an image (upscaled)")
        max_pixels: int = Field(P.IMAGE_MAX_PIXELS, gt=0, description="pixel cap of an image (downscaled)")
        video_min_pixels: int = Field(P.VIDEO_MIN_PIXELS, gt=0, description="per-frame pixel floor of a video")
        video_max_pixels: int = Field(P.VIDEO_MAX_PIXELS, gt=0, description="per-frame pixel cap of a video")
        max_side: int | None = Field(P.MAX_SIDE, gt=0, description="longest image side before resizing; None = no cap")
        max_frames: int = Field(DEFAULT_MAX_FRAMES, gt=0, description="frames kept per video (sampled uniformly)")
        attn_implementation: Literal["sdpa", "eager"] = "sdpa"

        @model_validator(mode="after")
        def _ranges(self) -> Self:
            if self.min_pixels > self.max_pixels:
                raise ValueError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels ({self.max_pixels})")
            if self.video_min_pixels > self.video_max_pixels:
                raise ValueError(f"video_min_pixels ({self.video_min_pixels}) must not exceed video_max_pixels "
                                 f"({self.video_max_pixels})")
            return self

    modalities: ClassVar[frozenset[Modality]] = frozenset({Modality.IMAGE, Modality.VIDEO})

    def __init__(self, options: Options, config: Any) -> None:
        super().__init__()
        from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

        self.options = options
        config._attn_implementation = options.attn_implementation
        self.visual = Qwen2VisionTransformerPretrainedModel(config)
        self.output_dim = int(config.hidden_size)
        self.merge_size = int(config.spatial_merge_size)
        self.preprocessor = P.VisionPreprocessor(
            patch_size=int(config.patch_size), merge_size=self.merge_size,
            temporal_patch_size=int(config.temporal_patch_size), min_pixels=options.min_pixels,
            max_pixels=options.max_pixels, video_min_pixels=options.video_min_pixels,
            video_max_pixels=options.video_max_pixels, max_side=options.max_side)

    @staticmethod
    def _config(fields: dict[str, Any], where: str) -> Any:
        from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig

        fields = {k: v for k, v in fields.items() if k != "model_type"}  # old folders say "qwen2_vl" here
        try:
            return Qwen2VLVisionConfig(**fields)
        except Exception as exc:  # transformers validates config fields with several exception types
            raise ConfigError([(where, f"{type(exc).__name__}: {exc}")]) from None

    @classmethod
    def from_options(cls, options: Options) -> Self:
        """Build from ``config`` (random weights) or load from ``path``."""
        if (options.path is None) == (options.config is None):
            raise ConfigError([("encoder.options", "set exactly one of path (a Qwen2-VL folder) or config "
                                                   "(Qwen2VLVisionConfig fields, for random weights)")])
        if options.config is not None:
            log.info("qwen2-vl-vision: random init from %s", options.config)
            return cls(options, cls._config(options.config, "encoder.options.config"))
        folder = resolve_path(options.path)
        data = read_config(folder)
        if not isinstance(data.get("vision_config"), dict):
            raise CheckpointError(f"{folder}/config.json has no vision_config: not a Qwen2-VL folder "
                                  f"(model_type {data.get('model_type')!r})")
        module = cls(options, cls._config(data["vision_config"], f"{folder}/config.json vision_config"))
        tensors = read_tensors(folder, vision_key)
        if not tensors:
            raise CheckpointError(f"{folder} holds no vision weights (no 'visual.*' or 'model.visual.*' keys)")
        load_strict(module.visual, tensors, f"{folder} (vision tower)")
        return module

    def saved_options(self) -> Options:
        """Architecture-only options: the vision config inline, no path."""
        cfg = self.visual.config.to_dict()
        return self.options.model_copy(update={"path": None, "config": {k: cfg[k] for k in VISION_FIELDS if k in cfg}})

    # ------------------------------------------------------------------ Encoder

    def _frames(self, item: Any, index: int) -> tuple[str, Any]:
        from PIL import Image

        if isinstance(item, Image.Image):
            return "image", item
        if isinstance(item, VideoClip):
            frames = item.frames
        elif isinstance(item, (list, tuple)) and item and all(isinstance(f, Image.Image) for f in item):
            frames = list(item)
        else:
            raise MediaError(f"qwen2-vl-vision: item {index} must be a PIL image, a VideoClip or a list of PIL "
                             f"frames, got {type(item).__name__} (see lyra_sdk.media.image.load_image and "
                             f"lyra_sdk.media.video.load_video)")
        if not frames:
            raise MediaError(f"qwen2-vl-vision: video item {index} has no frames")
        if len(frames) > self.options.max_frames:
            frames = [frames[i] for i in sample_indices(len(frames), self.options.max_frames)]
        return "video", frames

    def featurize(self, media: Sequence[Any]) -> Features:
        """Images / videos -> ``pixel_values`` (total patches, 3 * 2 * 14 * 14) and ``grid_thw`` (N, 3).

        One row per item; ``valid_lengths[n]`` is item n's number of LLM tokens, t * h * w / merge**2.
        """
        patches: list[np.ndarray] = []
        grids: list[tuple[int, int, int]] = []
        for index, item in enumerate(media):
            kind, content = self._frames(item, index)
            pv, grid = self.preprocessor.image(content) if kind == "image" else self.preprocessor.video(content)
            patches.append(pv)
            grids.append(grid)
        width = 3 * self.preprocessor.temporal_patch_size * self.preprocessor.patch_size ** 2
        pixel_values = torch.from_numpy(np.concatenate(patches)) if patches else torch.zeros(0, width)
        grid_thw = torch.tensor(grids, dtype=torch.long).reshape(-1, 3)  # (N, 3) in patches
        tokens = [t * h * w // self.merge_size ** 2 for t, h, w in grids]
        return Features({"pixel_values": pixel_values, "grid_thw": grid_thw}, list(range(len(grids))), tokens)

    def forward(self, features: Features) -> MediaEmbeddings:
        """``pixel_values`` + ``grid_thw`` -> embeddings (N, T_max, hidden_size), mask (N, T_max), grids (N, 3)."""
        weight = self.visual.patch_embed.proj.weight
        grid_thw = features.tensors["grid_thw"].to(weight.device)  # (N, 3)
        n = grid_thw.shape[0]
        merged = grid_thw.clone()
        merged[:, 1:] //= self.merge_size  # (N, 3) LLM token grids
        if n == 0:
            empty = weight.new_zeros(0, 0, self.output_dim)
            return MediaEmbeddings(empty, torch.zeros(0, 0, dtype=torch.bool, device=weight.device), merged)
        pixel_values = features.tensors["pixel_values"].to(device=weight.device, dtype=weight.dtype)  # (P, C*T*p*p)
        tokens = self.visual(pixel_values, grid_thw=grid_thw).pooler_output  # (sum of tokens, D)
        lengths = merged.prod(dim=-1).tolist()
        rows = torch.split(tokens, lengths)
        longest = max(lengths)
        out = tokens.new_zeros(n, longest, self.output_dim)  # (N, T_max, D)
        mask = torch.zeros(n, longest, dtype=torch.bool, device=tokens.device)
        for i, row in enumerate(rows):
            out[i, : row.shape[0]] = row
            mask[i, : row.shape[0]] = True
        return MediaEmbeddings(out, mask, merged)
