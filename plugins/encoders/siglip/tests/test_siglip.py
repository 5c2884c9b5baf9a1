"""The ``siglip`` encoder: preprocessing and tower parity with transformers, checkpoint layouts, strict loading,
options, and composition with a tiny Qwen2 LLM through ``Lyra.from_config``."""

from __future__ import annotations

import json
from importlib import metadata

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from lyra_sdk.errors import CheckpointError, ConfigError, MediaError
from lyra_sdk.interfaces import ComponentKind, Encoder, Modality
from lyra_siglip.plugin import SiglipEncoder
from lyra_siglip.processing import preprocess_images

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=32,
            patch_size=8)
ATOL = 1e-5  # fp32 tower; measured max |diff| vs transformers ~1e-6
TINY_QWEN2 = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "intermediate_size": 128, "vocab_size": 151936}


def _images(seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(37, 23), (64, 64), (15, 90)]
    ims = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
    ims.append(Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8), mode="L"))  # grayscale
    return ims


def _perturb(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)


@pytest.fixture(scope="module")
def hf_model():
    """A tiny transformers SiglipVisionModel with seeded, perturbed weights (pooling head included)."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    config = SiglipVisionConfig(**TINY)
    config._attn_implementation = "eager"
    model = SiglipVisionModel(config).eval()
    _perturb(model, 1)
    return model


@pytest.fixture(scope="module")
def hf_folder(hf_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("siglip") / "vision"
    hf_model.save_pretrained(folder)
    return folder


def test_entry_point_and_host():
    eps = [ep for ep in metadata.entry_points(group="lyra_sdk") if ep.name == "siglip"]
    assert len(eps) == 1 and eps[0].value == "lyra_siglip.plugin" and eps[0].dist.name == "lyra-siglip"
    from lyra_sdk.plugins import get_plugin_host

    host = get_plugin_host()
    assert host.get(ComponentKind.ENCODER, "siglip").cls is SiglipEncoder
    built = host.build(ComponentKind.ENCODER, "siglip", {"config": TINY})
    assert isinstance(built, Encoder) and built.output_dim == 32 and built.modalities == frozenset({Modality.IMAGE})


@pytest.mark.parametrize("kwargs", [{}, {"size": {"height": 48, "width": 48}, "image_mean": [0.48, 0.45, 0.40],
                                         "image_std": [0.26, 0.26, 0.27]}])
def test_preprocessing_equals_transformers_pil_processor(kwargs):
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    proc = SiglipImageProcessorPil(**kwargs)
    size = proc.size["height"]
    images = _images()
    expected = proc(images, return_tensors="pt")["pixel_values"]
    got = preprocess_images(images, size, mean=proc.image_mean, std=proc.image_std)
    assert got.shape == expected.shape == (4, 3, size, size) and got.dtype == torch.float32
    assert torch.equal(got, expected)  # bit-identical


def test_slow_processor_falls_back_to_pil_without_torchvision():
    """``SiglipImageProcessor`` (what a checkpoint's preprocessor_config names) resolves to the PIL class here."""
    import importlib.util

    from transformers import SiglipImageProcessor

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: SiglipImageProcessor is the torchvision backend")
    images = _images(1)
    expected = SiglipImageProcessor()(images, return_tensors="pt")["pixel_values"]
    assert torch.equal(preprocess_images(images, 224), expected)


def test_tower_equals_transformers(hf_model, hf_folder):
    enc = SiglipEncoder.from_options(SiglipEncoder.Options(path=str(hf_folder))).eval()
    images = _images(2)
    feats = enc.featurize(images)
    with torch.no_grad():
        ref = hf_model(feats.tensors["pixel_values"], output_hidden_states=True)
        out = enc(feats)
    assert out.embeddings.shape == ref.last_hidden_state.shape == (4, 16, 32)
    torch.testing.assert_close(out.embeddings, ref.last_hidden_state, atol=ATOL, rtol=0)
    assert out.mask.all() and out.grids.tolist() == [[1, 4, 4]] * 4 and feats.row_item == [0, 1, 2, 3]
    llava = SiglipEncoder.from_options(SiglipEncoder.Options(path=str(hf_folder), select_layer=-2,
                                                             post_layernorm=False)).eval()
    with torch.no_grad():
        torch.testing.assert_close(llava(feats).embeddings, ref.hidden_states[-2], atol=ATOL, rtol=0)
        first = SiglipEncoder.from_options(SiglipEncoder.Options(path=str(hf_folder), select_layer=0,
                                                                 post_layernorm=False))(feats).embeddings
    torch.testing.assert_close(first, ref.hidden_states[0], atol=ATOL, rtol=0)


def test_chunked_forward_and_batches_agree(hf_folder):
    enc = SiglipEncoder.from_options(SiglipEncoder.Options(path=str(hf_folder), max_batch_images=3)).eval()
    images = _images(3)
    pieces = list(enc.featurize_batches(images))
    assert [p.row_item for p in pieces] == [[0, 1, 2], [3]]
    with torch.no_grad():
        whole = enc(enc.featurize(images)).embeddings
        parts = torch.cat([enc(p).embeddings for p in pieces])
        single = enc.vision_model(enc.featurize(images).tensors["pixel_values"])
    torch.testing.assert_close(whole, parts, atol=1e-6, rtol=0)
    torch.testing.assert_close(whole, single, atol=1e-6, rtol=0)


def _save_tensors(folder, tensors, config):
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))


def test_image_size_not_a_multiple_of_the_patch(tmp_path):
    """Like siglip-so400m-patch14-384 (384 / 14 -> 27 x 27 patches): the conv drops the remainder."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(3)
    ref = SiglipVisionModel(SiglipVisionConfig(**{**TINY, "image_size": 30, "patch_size": 7})).eval()
    _perturb(ref, 4)
    ref.save_pretrained(tmp_path / "odd")
    enc = SiglipEncoder.from_options(SiglipEncoder.Options(path=str(tmp_path / "odd"))).eval()
    feats = enc.featurize(_images(7)[:2])
    with torch.no_grad():
        out = enc(feats)
        expected = ref(feats.tensors["pixel_values"]).last_hidden_state
    assert feats.tensors["pixel_values"].shape == (2, 3, 30, 30) and out.embeddings.shape == (2, 16, 32)
    torch.testing.assert_close(out.embeddings, expected, atol=ATOL, rtol=0)
    assert out.grids.tolist() == [[1, 4, 4]] * 2


def test_loads_siglip_model_and_prefixed_layouts(hf_model, tmp_path):
    from transformers import SiglipConfig, SiglipModel

    full = SiglipModel(SiglipConfig(vision_config=TINY, text_config=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, vocab_size=64,
        bos_token_id=1, eos_token_id=2, pad_token_id=0)))
    full.vision_model.load_state_dict(hf_model.state_dict())
    full.save_pretrained(tmp_path / "full")
    # transformers 4.x SiglipVisionModel: keys under vision_model., with an old position_ids buffer
    sd = {f"vision_model.{k}": v for k, v in hf_model.state_dict().items()}
    sd["vision_model.embeddings.position_ids"] = torch.arange(16)[None]
    _save_tensors(tmp_path / "v4", sd, {"model_type": "siglip_vision_model", **TINY})
    images = _images(4)
    with torch.no_grad():
        expected = hf_model(preprocess_images(images, 32)).last_hidden_state
        for name in ("full", "v4"):
            enc = SiglipEncoder.from_options(SiglipEncoder.Options(path=str(tmp_path / name)))
            torch.testing.assert_close(enc(enc.featurize(images)).embeddings, expected, atol=ATOL, rtol=0)


def test_strict_loading_names_keys(hf_model, tmp_path):
    sd = dict(hf_model.state_dict())
    cfg = {"model_type": "siglip_vision_model", **TINY}
    missing = {k: v for k, v in sd.items() if k != "encoder.layers.1.mlp.fc2.bias"}
    _save_tensors(tmp_path / "missing", missing, cfg)
    with pytest.raises(CheckpointError, match=r"missing key 'encoder\.layers\.1\.mlp\.fc2\.bias'"):
        SiglipEncoder.from_options(SiglipEncoder.Options(path=str(tmp_path / "missing")))
    _save_tensors(tmp_path / "extra", {**sd, "decoder.weight": torch.zeros(2)}, cfg)
    with pytest.raises(CheckpointError, match=r"unexpected key 'decoder\.weight'"):
        SiglipEncoder.from_options(SiglipEncoder.Options(path=str(tmp_path / "extra")))
    _save_tensors(tmp_path / "shape", sd, {**cfg, "intermediate_size": 48})
    with pytest.raises(CheckpointError, match=r"shape mismatch for 'encoder\.layers\.0\.mlp\.fc1\.bias'"):
        SiglipEncoder.from_options(SiglipEncoder.Options(path=str(tmp_path / "shape")))
    _save_tensors(tmp_path / "clip", sd, {**cfg, "model_type": "clip_vision_model"})
    with pytest.raises(CheckpointError, match="not a SigLIP model"):
        SiglipEncoder.from_options(SiglipEncoder.Options(path=str(tmp_path / "clip")))
    with pytest.raises(CheckpointError, match="not found"):
        SiglipEncoder.from_options(SiglipEncoder.Options(path=str(tmp_path / "nowhere")))


def test_options_are_validated():
    with pytest.raises(ValidationError, match="extra"):
        SiglipEncoder.Options(config=TINY, selct_layer=-2)
    with pytest.raises(ConfigError, match="exactly one of path"):
        SiglipEncoder.from_options(SiglipEncoder.Options())
    with pytest.raises(ConfigError, match="unknown SigLIP vision config field"):
        SiglipEncoder.from_options(SiglipEncoder.Options(config={**TINY, "hidden_sise": 8}))
    with pytest.raises(ConfigError, match="divisible"):
        SiglipEncoder.from_options(SiglipEncoder.Options(config={**TINY, "num_attention_heads": 5}))
    with pytest.raises(ConfigError, match="select_layer"):
        SiglipEncoder.from_options(SiglipEncoder.Options(config=TINY, select_layer=-5))
    with pytest.raises(ConfigError, match="image_std"):
        SiglipEncoder.from_options(SiglipEncoder.Options(config=TINY, image_std=(0.5, 0.0, 0.5)))


def test_bad_media():
    enc = SiglipEncoder.from_options(SiglipEncoder.Options(config=TINY))
    with pytest.raises(MediaError, match="PIL image"):
        enc.featurize(["cat.png"])
    with pytest.raises(MediaError, match="PIL image"):
        enc.featurize([np.zeros((4, 4, 3), np.uint8)])


def test_saved_options_rebuild_the_tower(hf_folder):
    enc = SiglipEncoder.from_options(SiglipEncoder.Options(path=str(hf_folder), select_layer=-2))
    saved = enc.saved_options()
    assert saved.path is None and saved.config["num_hidden_layers"] == 3 and saved.select_layer == -2
    again = SiglipEncoder.from_options(SiglipEncoder.Options.model_validate(saved.model_dump()))
    again.load_state_dict(enc.state_dict(), strict=True)
    assert "vision_model.encoder.layers.2.self_attn.q_proj.weight" in enc.state_dict()


@pytest.fixture(scope="module")
def lyra_model():
    from lyra_sdk import Lyra

    config = {
        "llm": {"plugin": "qwen2", "options": {"tokenizer": "qwen2", "config": TINY_QWEN2}},
        "encoders": {"image": {"plugin": "siglip", "options": {"config": TINY}}},
        "projectors": {"image": {"plugin": "mlp2x_gelu"}},
    }
    return Lyra.from_config(config)


def test_composes_with_mlp_projector_and_qwen2(lyra_model):
    from lyra_sdk.prompt import Prompt

    model = lyra_model
    assert model.projectors["image"].in_dim == 32 and model.projectors["image"].out_dim == 64
    image = _images(5)[0]
    batch = model.prepare([Prompt("<image> what is this?", {"image": [image]})])
    (span,) = batch.spans[0]
    assert span.modality is Modality.IMAGE and span.length == 16  # (32 / 8) ** 2 patch tokens
    texts, ids = model.generate_ids([Prompt("<image> what is this?", {"image": [image]})], max_new_tokens=4)
    assert len(texts) == 1 and isinstance(texts[0], str) and 1 <= len(ids[0]) <= 4


def test_two_images_in_one_prompt_and_save_load(lyra_model, tmp_path):
    from lyra_sdk import Lyra
    from lyra_sdk.prompt import Prompt

    prompt = Prompt("<image> and <image>: same?", {"image": _images(6)[:2]})
    before = lyra_model.generate_ids([prompt], max_new_tokens=3)[1]
    assert [s.length for s in lyra_model.prepare([prompt]).spans[0]] == [16, 16]
    lyra_model.save_pretrained(tmp_path / "m")
    again = Lyra.from_pretrained(tmp_path / "m")
    assert again.generate_ids([prompt], max_new_tokens=3)[1] == before
