"""Shared fixtures of the Qwen2-VL plugin tests: tiny configs, a reference transformers model, media makers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

TEXT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
            vocab_size=151936, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1000000.0})
"""A tiny Qwen2-VL text config: head_dim 16, so the M-RoPE sections (2, 3, 3) cover its 8 frequencies."""
VISION = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2)
"""A tiny vision tower: 2 blocks of width 32, merger output 64 (= the LLM width)."""
QWEN2VL = dict(text_config=TEXT, vision_config=VISION, tie_word_embeddings=True, image_token_id=151655,
               video_token_id=151656, vision_start_token_id=151652)
IMAGE_TOKEN, VIDEO_TOKEN = 151655, 151656


def lyra_config(video: bool = True) -> dict:
    """A Lyra config dict: qwen2-vl LLM + qwen2-vl-vision for images (and small videos), identity projectors."""
    llm = {"plugin": "qwen2-vl", "options": {"tokenizer": "qwen2", "config": QWEN2VL}}
    cfg = {"name": "tiny-qwen2-vl", "llm": llm,
           "encoders": {"image": {"plugin": "qwen2-vl-vision", "options": {"config": VISION}}},
           "projectors": {"image": {"plugin": "identity"}}}
    if video:
        small = {"config": VISION, "max_frames": 4, "video_min_pixels": 56 * 56, "video_max_pixels": 28 * 28 * 16}
        cfg["encoders"]["video"] = {"plugin": "qwen2-vl-vision", "options": small}
        cfg["projectors"]["video"] = {"plugin": "identity"}
    return cfg


@pytest.fixture(scope="session")
def reference():
    """A tiny random ``Qwen2VLForConditionalGeneration`` (fp32, eval)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    return Qwen2VLForConditionalGeneration(Qwen2VLConfig(**QWEN2VL)).eval()


def copy_reference(lyra, reference) -> None:
    """Put the reference's weights into a Lyra model built from :func:`lyra_config`."""
    lyra.llm.model.model.load_state_dict(reference.model.language_model.state_dict())
    lyra.llm.model.lm_head.load_state_dict(reference.lm_head.state_dict())
    for m in ("image", "video"):
        if m in lyra.encoders:
            lyra.encoders[m].visual.load_state_dict(reference.model.visual.state_dict())


@pytest.fixture(scope="session")
def lyra_vl(reference):
    """A Lyra model (image + video) holding the reference's weights."""
    from lyra_sdk import Lyra

    model = Lyra.from_config(lyra_config())
    copy_reference(model, reference)
    return model


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A seeded random RGB image."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def write_video(path: Path, frames: int = 8, fps: int = 4, size: tuple[int, int] = (64, 48)) -> Path:
    """A small mpeg4 video written with PyAV: frame i is a flat grey of level 8 * i."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        if frames == 0:
            container.start_encoding()
        for i in range(frames):
            img = np.full((size[1], size[0], 3), (8 * i) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def vl():
    """The helpers and constants of this file (test modules cannot import conftest under importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(TEXT=TEXT, VISION=VISION, QWEN2VL=QWEN2VL, IMAGE_TOKEN=IMAGE_TOKEN, VIDEO_TOKEN=VIDEO_TOKEN,
                           lyra_config=lyra_config, copy_reference=copy_reference, noise_image=noise_image,
                           write_video=write_video)
