"""SigLIP image preprocessing in PIL + numpy: resize to a square, rescale to [0, 1], normalise per channel.

The arithmetic follows transformers' PIL image processor (``SiglipImageProcessor`` without torchvision, i.e.
``SiglipImageProcessorPil``) step by step, so the pixel values are bit-identical: PIL resize of the uint8 RGB
image, ``float64 * rescale_factor`` cast to float32, then ``(x - mean) / std`` in float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
"""Resampling filters by option name (SigLIP checkpoints use bicubic)."""


def preprocess_image(image: Image.Image, size: int, resample: str = "bicubic", rescale_factor: float = 1 / 255,
                     mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5)) -> np.ndarray:
    """One PIL image -> float32 pixel values (3, size, size). Non-RGB images are converted to RGB first."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    resized = np.asarray(image.resize((size, size), resample=RESAMPLE[resample]))  # (S, S, 3) uint8
    x = (resized.astype(np.float64) * rescale_factor).astype(np.float32)  # (S, S, 3)
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # (3, S, S)


def preprocess_images(images: Sequence[Image.Image], size: int, resample: str = "bicubic",
                      rescale_factor: float = 1 / 255, mean: Sequence[float] = (0.5, 0.5, 0.5),
                      std: Sequence[float] = (0.5, 0.5, 0.5)) -> torch.Tensor:
    """PIL images -> ``pixel_values`` (N, 3, size, size) float32."""
    if not images:
        return torch.zeros(0, 3, size, size)
    arrays = [preprocess_image(im, size, resample, rescale_factor, mean, std) for im in images]
    return torch.from_numpy(np.stack(arrays))


__all__ = ["RESAMPLE", "preprocess_image", "preprocess_images"]
