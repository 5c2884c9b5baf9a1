"""The ``qwen2-vl-vision`` encoder: discovery, features, padded rows and grids, HF folders, options and errors."""

from __future__ import annotations

from importlib import metadata

import pytest
import torch
from pydantic import ValidationError

from lyra_qwen2_vl.vision import Qwen2VLVisionEncoder
from lyra_sdk.errors import CheckpointError, ConfigError, MediaError
from lyra_sdk.interfaces import ComponentKind, Encoder, Modality
from lyra_sdk.media.video import VideoClip


@pytest.fixture(scope="module")
def encoder(reference):
    enc = Qwen2VLVisionEncoder.from_options(Qwen2VLVisionEncoder.Options(
        config=dict(reference.config.vision_config.to_dict()), max_frames=4, video_min_pixels=56 * 56,
        video_max_pixels=28 * 28 * 16))
    enc.visual.load_state_dict(reference.model.visual.state_dict())
    return enc.eval()


def test_entry_point_and_host():
    from lyra_sdk.plugins import get_plugin_host

    eps = [ep for ep in metadata.entry_points(group="lyra_sdk") if ep.name == "qwen2-vl"]
    assert len(eps) == 1 and eps[0].value == "lyra_qwen2_vl.plugin" and eps[0].dist.name == "lyra-qwen2-vl"
    host = get_plugin_host()
    entry = host.get(ComponentKind.ENCODER, "qwen2-vl-vision")
    assert entry.cls is Qwen2VLVisionEncoder and entry.package == "lyra-qwen2-vl"
    assert host.get(ComponentKind.LLM, "qwen2-vl").package == "lyra-qwen2-vl"


def test_rows_masks_and_grids_equal_transformers(encoder, reference, vl):
    image_a, image_b = vl.noise_image(100, 70, 1), vl.noise_image(56, 56, 2)
    clip = VideoClip([vl.noise_image(60, 60, 10 + i) for i in range(3)], [0.0, 0.5, 1.0], 2.0, 1.5)
    feats = encoder.featurize([image_a, clip, image_b])
    grid = feats.tensors["grid_thw"]
    assert grid.tolist() == [[1, 4, 8], [2, 4, 4], [1, 4, 4]]  # 3 frames -> 2 temporal patches
    assert feats.row_item == [0, 1, 2] and feats.valid_lengths == [8, 8, 4]
    assert isinstance(encoder, Encoder) and encoder.modalities == {Modality.IMAGE, Modality.VIDEO}
    with torch.no_grad():
        out = encoder(feats)
        ref = reference.model.visual(feats.tensors["pixel_values"], grid_thw=grid).pooler_output  # (20, 64)
    assert out.embeddings.shape == (3, 8, 64) and out.mask.sum(1).tolist() == [8, 8, 4]
    assert out.grids.tolist() == [[1, 2, 4], [2, 2, 2], [1, 2, 2]]
    assert (out.grids.prod(-1) == out.mask.sum(1)).all()
    torch.testing.assert_close(out.embeddings[out.mask], ref, rtol=0, atol=1e-6)
    assert not out.embeddings[~out.mask].any()


def test_frames_list_and_max_frames(encoder, vl):
    frames = [vl.noise_image(56, 56, i) for i in range(9)]
    feats = encoder.featurize([frames])  # a plain list of frames is a video; 9 frames thinned to max_frames=4
    assert feats.tensors["grid_thw"][0, 0].item() == 2
    with pytest.raises(MediaError, match="must be a PIL image, a VideoClip"):
        encoder.featurize(["not loaded.png"])
    with pytest.raises(MediaError, match="no frames"):
        encoder.featurize([VideoClip([], [], 0.0, 0.0)])
    empty = encoder(encoder.featurize([]))
    assert empty.embeddings.shape == (0, 0, 64) and empty.grids.shape == (0, 3)


def test_options_are_checked(vl):
    with pytest.raises(ConfigError, match="exactly one of path"):
        Qwen2VLVisionEncoder.from_options(Qwen2VLVisionEncoder.Options())
    with pytest.raises(ConfigError, match="exactly one of path"):
        Qwen2VLVisionEncoder.from_options(Qwen2VLVisionEncoder.Options(path="x", config=vl.VISION))
    with pytest.raises(ValidationError, match="min_pixels"):
        Qwen2VLVisionEncoder.Options(config=vl.VISION, min_pixels=10_000, max_pixels=5_000)
    with pytest.raises(ValidationError, match="extra"):
        Qwen2VLVisionEncoder.Options(config=vl.VISION, resolution=3)
    with pytest.raises(ConfigError, match="config"):
        Qwen2VLVisionEncoder.from_options(Qwen2VLVisionEncoder.Options(config={"depth": "deep"}))


def test_saved_options_rebuild_the_architecture(encoder):
    opts = encoder.saved_options()
    assert opts.path is None and opts.config["embed_dim"] == 32 and opts.config["hidden_size"] == 64
    again = Qwen2VLVisionEncoder.from_options(Qwen2VLVisionEncoder.Options.model_validate(opts.model_dump()))
    assert again.state_dict().keys() == encoder.state_dict().keys() and again.options.max_frames == 4


def _resave(folder, out, rename):
    """Copy an HF folder, renaming weight keys (to fake other checkpoint layouts)."""
    import shutil

    from safetensors.torch import load_file, save_file

    out.mkdir()
    shutil.copy(folder / "config.json", out / "config.json")
    tensors = {}
    for f in folder.glob("*.safetensors"):
        tensors.update(load_file(str(f)))
    save_file({rename(k): v.contiguous() for k, v in tensors.items() if rename(k)}, str(out / "model.safetensors"))
    return out


@pytest.fixture(scope="module")
def hf_folder(reference, tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen2vl") / "hf"
    reference.save_pretrained(str(folder))
    return folder


def test_loads_hf_folders_strictly(hf_folder, encoder, vl, tmp_path):
    image = vl.noise_image(80, 60)
    with torch.no_grad():
        want = encoder(encoder.featurize([image])).embeddings
        for folder in (hf_folder, _resave(hf_folder, tmp_path / "v4", lambda k: k.replace("model.visual.", "visual."))):
            loaded = Qwen2VLVisionEncoder.from_options(Qwen2VLVisionEncoder.Options(path=str(folder))).eval()
            assert loaded.output_dim == 64
            assert torch.equal(loaded(loaded.featurize([image])).embeddings, want)
    broken = _resave(hf_folder, tmp_path / "broken", lambda k: None if k.endswith("merger.mlp.2.bias") else k)
    with pytest.raises(CheckpointError, match=r"missing key 'merger\.mlp\.2\.bias'"):
        Qwen2VLVisionEncoder.from_options(Qwen2VLVisionEncoder.Options(path=str(broken)))
    extra = _resave(hf_folder, tmp_path / "extra", lambda k: k.replace("blocks.1.", "blocks.7."))
    with pytest.raises(CheckpointError, match=r"unexpected .*blocks\.7\."):
        Qwen2VLVisionEncoder.from_options(Qwen2VLVisionEncoder.Options(path=str(extra)))
    text_only = _resave(hf_folder, tmp_path / "text", lambda k: None if "visual" in k else k)
    with pytest.raises(CheckpointError, match="no vision weights"):
        Qwen2VLVisionEncoder.from_options(Qwen2VLVisionEncoder.Options(path=str(text_only)))
    with pytest.raises(CheckpointError, match="not found"):
        Qwen2VLVisionEncoder.from_options(Qwen2VLVisionEncoder.Options(path=str(tmp_path / "nope")))
