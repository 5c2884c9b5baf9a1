"""Pixel preprocessing equals transformers' PIL/numpy ``Qwen2VLImageProcessorPil`` value for value.

(transformers' ``Qwen2VLImageProcessor`` in ``image_processing_qwen2_vl`` needs torchvision, which cannot be
installed here; the PIL-based class in ``image_processing_pil_qwen2_vl`` is the slow numpy implementation.)
Video patches are compared with a numpy transcription of ``Qwen2VLVideoProcessor.patchify``.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lyra_qwen2_vl import processing as P
from lyra_sdk.errors import MediaError


@pytest.fixture(scope="module")
def hf_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil


@pytest.mark.parametrize("h,w", [(1, 1), (30, 40), (56, 56), (57, 85), (500, 333), (1080, 1920), (2000, 20)])
@pytest.mark.parametrize("mn,mx", [(56 * 56, 28 * 28 * 1280), (128 * 28 * 28, 28 * 28 * 768)])
def test_smart_resize_matches_transformers(h, w, mn, mx):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    assert P.smart_resize(h, w, 28, mn, mx) == smart_resize(h, w, 28, mn, mx)


def test_smart_resize_refuses_extreme_aspect_ratio():
    with pytest.raises(MediaError, match="aspect ratio"):
        P.smart_resize(10, 2010)


@pytest.mark.parametrize("size,mode,kwargs", [
    ((100, 70), "RGB", {}),
    ((20, 30), "RGB", {}),                                  # upscaled to min_pixels
    ((1400, 900), "RGB", {}),                               # downscaled to max_pixels
    ((333, 250), "L", {}),                                  # grey -> RGB
    ((640, 480), "RGB", {"min_pixels": 4 * 28 * 28, "max_pixels": 64 * 28 * 28}),
])
def test_image_patches_equal_hf_processor(hf_processor, vl, size, mode, kwargs):
    img = vl.noise_image(*size, seed=sum(size)).convert(mode)
    hf = hf_processor(**kwargs)(images=[img], return_tensors="np")
    ours = P.VisionPreprocessor(**kwargs, max_side=None)
    patches, grid = ours.image(img.convert("RGB"))
    assert grid == tuple(hf["image_grid_thw"][0].tolist())
    assert patches.shape == hf["pixel_values"].shape and patches.shape[1] == 3 * 2 * 14 * 14
    assert patches.dtype == np.float32
    np.testing.assert_array_equal(patches, hf["pixel_values"])


def test_several_images_concatenate_like_hf(hf_processor, vl):
    images = [vl.noise_image(90, 60, 1), vl.noise_image(40, 120, 2)]
    hf = hf_processor()(images=images, return_tensors="np")
    ours = [P.VisionPreprocessor().image(im) for im in images]
    np.testing.assert_array_equal(np.concatenate([p for p, _ in ours]), hf["pixel_values"])
    assert [g for _, g in ours] == [tuple(g) for g in hf["image_grid_thw"].tolist()]


def _documented_video_patchify(frames: np.ndarray, p: int = 14, m: int = 2, tp: int = 2) -> np.ndarray:
    """numpy transcription of transformers' Qwen2VLVideoProcessor.patchify (batch of one video)."""
    video = frames[None]  # (1, F, C, H, W)
    if pad := -video.shape[1] % tp:
        video = np.concatenate([video, np.repeat(video[:, -1:], pad, axis=1)], axis=1)
    b, f, c, h, w = video.shape
    x = video.reshape(b, f // tp, tp, c, h // p // m, m, p, w // p // m, m, p)
    x = x.transpose(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    return x.reshape(f // tp * (h // p) * (w // p), c * tp * p * p)


@pytest.mark.parametrize("n_frames", [1, 2, 3, 4, 5])
def test_video_patches_follow_the_documented_layout(vl, n_frames):
    frames = [vl.noise_image(70, 50, seed=i) for i in range(n_frames)]
    pre = P.VisionPreprocessor(video_min_pixels=56 * 56, video_max_pixels=28 * 28 * 12)
    patches, grid = pre.video(frames)
    h, w = P.smart_resize(50, 70, 28, 56 * 56, 28 * 28 * 12)
    stack = np.stack([P.normalize(f.resize((w, h), Image.Resampling.BICUBIC)) for f in frames])
    assert grid == ((n_frames + 1) // 2, h // 14, w // 14)
    np.testing.assert_array_equal(patches, _documented_video_patchify(stack))


def test_image_is_a_two_frame_still_video(vl):
    img = vl.noise_image(84, 56)
    pre = P.VisionPreprocessor(video_min_pixels=56 * 56, video_max_pixels=28 * 28 * 1280)
    still, grid = pre.video([img, img])
    single, _ = pre.video([img])  # one frame: padded by repeating it
    image, image_grid = pre.image(img)
    assert grid == image_grid == (1, 4, 6)
    np.testing.assert_array_equal(still, image)
    np.testing.assert_array_equal(single, image)


def test_longest_side_is_capped_first(vl):
    img = vl.noise_image(3000, 1000)
    capped = P.cap_longest_side(img, 2880)
    assert capped.size == (2880, 960)
    assert P.cap_longest_side(img, None) is img and P.cap_longest_side(capped, 2880) is capped
    huge = P.VisionPreprocessor(max_pixels=28 * 28 * 16)
    _, grid = huge.image(img)
    assert grid[1] * grid[2] * 14 * 14 <= 28 * 28 * 16


def test_empty_video_is_refused():
    with pytest.raises(MediaError, match="no frames"):
        P.VisionPreprocessor().video([])
