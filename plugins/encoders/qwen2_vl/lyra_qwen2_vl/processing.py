"""Qwen2-VL pixel preprocessing with PIL and numpy (no torchvision).

An image is capped to a longest side (2880 px), resized with :func:`smart_resize` (both sides multiples of
28 = patch 14 x merge 2, pixel count within [min_pixels, max_pixels], aspect ratio kept) using PIL's bicubic
filter, rescaled by 1/255, normalised with the OpenAI CLIP mean/std and cut into flat patches of
``3 * 2 * 14 * 14`` values: an image is repeated to 2 frames (the temporal patch), a video's frames are grouped
in pairs (the last frame repeated when the count is odd). Patches are ordered so that each 2x2 block the
vision tower merges into one LLM token is contiguous. This reproduces transformers' PIL-based
``Qwen2VLImageProcessorPil`` value for value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lyra_sdk.errors import MediaError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_MIN_PIXELS = 56 * 56
IMAGE_MAX_PIXELS = 28 * 28 * 1280
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 28 * 28 * 768
MAX_SIDE = 2880
MAX_ASPECT_RATIO = 200


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = IMAGE_MIN_PIXELS,
                 max_pixels: int = IMAGE_MAX_PIXELS) -> tuple[int, int]:
    """The (height, width) Qwen2-VL resizes to: multiples of ``factor``, pixels in [min_pixels, max_pixels].

    Raises :class:`MediaError` when the aspect ratio exceeds 200 (such an image cannot keep its shape).
    """
    if min(height, width) <= 0:
        raise MediaError(f"image has no pixels ({width}x{height})")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise MediaError(f"image aspect ratio must be at most {MAX_ASPECT_RATIO}:1, got {width}x{height}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def cap_longest_side(image: Image.Image, max_side: int | None) -> Image.Image:
    """Downscale (bicubic, aspect kept) so that the longest side is at most ``max_side``; None = no cap."""
    if max_side is None or max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, resample=Image.Resampling.BICUBIC)


def normalize(image: Image.Image) -> np.ndarray:
    """RGB image -> (3, H, W) float32: x / 255 (computed in float64, as transformers does), then CLIP mean/std."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
    scaled = (pixels.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.asarray(OPENAI_CLIP_MEAN, dtype=np.float32)
    std = np.asarray(OPENAI_CLIP_STD, dtype=np.float32)
    return np.ascontiguousarray(((scaled - mean) / std).transpose(2, 0, 1))  # (3, H, W)


def patchify(frames: np.ndarray, patch_size: int = 14, merge_size: int = 2,
             temporal_patch_size: int = 2) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(F, C, H, W) -> patches (t * h * w, C * temporal * patch * patch) and the patch grid (t, h, w).

    Frames are padded to a multiple of ``temporal_patch_size`` by repeating the last one. Within a patch the
    values are ordered (channel, time, row, column); patches are ordered (time, merged row, merged column,
    row in block, column in block) so each ``merge_size`` x ``merge_size`` block is contiguous.
    """
    f, c, h, w = frames.shape
    if h % (patch_size * merge_size) or w % (patch_size * merge_size):
        raise ValueError(f"frame size {h}x{w} is not a multiple of {patch_size * merge_size}")
    if pad := -f % temporal_patch_size:
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)], axis=0)
    gt, gh, gw = frames.shape[0] // temporal_patch_size, h // patch_size, w // patch_size
    x = frames.reshape(gt, temporal_patch_size, c, gh // merge_size, merge_size, patch_size,
                       gw // merge_size, merge_size, patch_size)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (t, h/m, w/m, m, m, C, T, p, p)
    return x.reshape(gt * gh * gw, c * temporal_patch_size * patch_size * patch_size), (gt, gh, gw)


@dataclass(frozen=True)
class VisionPreprocessor:
    """Images and videos -> flat patches + (t, h, w) patch grids for the Qwen2-VL vision tower."""

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = IMAGE_MIN_PIXELS
    max_pixels: int = IMAGE_MAX_PIXELS
    video_min_pixels: int = VIDEO_MIN_PIXELS
    video_max_pixels: int = VIDEO_MAX_PIXELS
    max_side: int | None = MAX_SIDE

    @property
    def factor(self) -> int:
        """Both resized sides are multiples of this (patch size x merge size)."""
        return self.patch_size * self.merge_size

    def _resized(self, image: Image.Image, size: tuple[int, int]) -> np.ndarray:
        height, width = size
        return normalize(image.convert("RGB").resize((width, height), resample=Image.Resampling.BICUBIC))

    def image(self, image: Image.Image) -> tuple[np.ndarray, tuple[int, int, int]]:
        """One image -> patches (h * w, 3 * T * p * p) and grid (1, h, w) in patches."""
        image = cap_longest_side(image, self.max_side)
        size = smart_resize(image.height, image.width, self.factor, self.min_pixels, self.max_pixels)
        frame = self._resized(image, size)[None]  # (1, 3, H, W)
        return patchify(frame, self.patch_size, self.merge_size, self.temporal_patch_size)

    def video(self, frames: Sequence[Image.Image]) -> tuple[np.ndarray, tuple[int, int, int]]:
        """Frames of one video (all resized to the first frame's target size) -> patches and grid (t, h, w)."""
        if not frames:
            raise MediaError("video has no frames")
        first = frames[0]
        size = smart_resize(first.height, first.width, self.factor, self.video_min_pixels, self.video_max_pixels)
        stack = np.stack([self._resized(f, size) for f in frames])  # (F, 3, H, W)
        return patchify(stack, self.patch_size, self.merge_size, self.temporal_patch_size)
