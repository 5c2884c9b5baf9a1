"""End to end with ``examples/configs/tiny-omni.yaml``: several images, a video and image + speech + text prompts
answered in one batch through ``Lyra.generate``; save / load; media errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lyra_sdk import Lyra
from lyra_sdk.errors import MediaError
from lyra_sdk.interfaces import Modality
from lyra_sdk.prompt import Prompt

CONFIG = Path(__file__).resolve().parents[4] / "examples" / "configs" / "tiny-omni.yaml"


@pytest.fixture(scope="module")
def omni():
    return Lyra.from_config(CONFIG)


@pytest.fixture(scope="module")
def media(tmp_path_factory, vl):
    folder = tmp_path_factory.mktemp("media")
    vl.noise_image(320, 240, 1).save(folder / "a.jpg")
    vl.noise_image(150, 200, 2).save(folder / "b.png")
    vl.write_video(folder / "clip.mp4", frames=12, fps=4, size=(96, 64))
    t = np.arange(16000) / 16000
    speech = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    return {"a": str(folder / "a.jpg"), "b": str(folder / "b.png"), "clip": str(folder / "clip.mp4"), "speech": speech,
            "folder": folder}


def _prompts(media):
    return [
        Prompt("Compare <image> and <image>.", {"image": [media["a"], media["b"]]}),
        Prompt("<video>\nWhat happens in this video?", {"video": [media["clip"]]}),
        Prompt("<image>\n<speech>\nAnswer in one word.", {"image": [media["a"]], "speech": [media["speech"]]}),
    ]


def test_the_example_config_builds_an_omni_model(omni):
    assert omni.modalities == {Modality.IMAGE, Modality.VIDEO, Modality.SPEECH, Modality.SOUND}
    assert omni.llm.hidden_size == 64 and omni.encoders["image"].output_dim == 64


def test_mixed_batch_generates(omni, media):
    prompts = _prompts(media)
    batch = omni.prepare(prompts)
    kinds = [[s.modality for s in row] for row in batch.spans]
    assert kinds == [[Modality.IMAGE, Modality.IMAGE], [Modality.VIDEO], [Modality.IMAGE, Modality.SPEECH]]
    assert batch.spans[1][0].grid[0].item() == 4  # 12 frames -> max_frames 8 -> 4 temporal patches
    assert batch.spans[2][1].grid is None and batch.spans[2][1].length == 10  # 1 s of speech -> 10 tokens
    texts, ids = omni.generate_ids(prompts, max_new_tokens=5, temperature=0.0)
    assert len(texts) == 3 and all(0 < len(row) <= 5 for row in ids)
    for prompt, row in zip(prompts, ids, strict=True):  # batched answers equal one-by-one answers
        assert omni.generate_ids([prompt], max_new_tokens=5, temperature=0.0)[1][0] == row
    sampled = omni.generate(prompts, max_new_tokens=4)  # the config's seeded sampling
    assert sampled == omni.generate(prompts, max_new_tokens=4)


def test_save_and_load_round_trip(omni, media, tmp_path):
    omni.save_pretrained(tmp_path / "m")
    again = Lyra.from_pretrained(tmp_path / "m")
    prompt = _prompts(media)[2]
    with torch.no_grad():
        a = omni(omni.prepare([prompt]), compute_loss=False)[0].logits
        b = again(again.prepare([prompt]), compute_loss=False)[0].logits
    assert torch.equal(a, b)


def test_bad_media_are_media_errors(omni, media):
    folder: Path = media["folder"]
    (folder / "bad.jpg").write_bytes(Path(media["a"]).read_bytes()[:300])
    (folder / "bad.mp4").write_bytes(Path(media["clip"]).read_bytes()[:200])
    with pytest.raises(MediaError, match="corrupt or truncated"):
        omni.generate([Prompt("<image>", {"image": [str(folder / "bad.jpg")]})], max_new_tokens=1)
    with pytest.raises(MediaError, match="corrupt"):
        omni.generate([Prompt("<video>", {"video": [str(folder / "bad.mp4")]})], max_new_tokens=1)


def test_video_paths_are_sampled_to_the_encoders_max_frames(omni, media):
    clip = omni.load_media(Modality.VIDEO, media["clip"])  # 12 frames in the file, tiny-omni keeps 8
    assert omni.encoders["video"].options.max_frames == 8
    assert len(clip.frames) == 8 and clip.timestamps == sorted(clip.timestamps)
