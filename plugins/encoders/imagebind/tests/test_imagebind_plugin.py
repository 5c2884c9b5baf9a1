"""The ``imagebind-audio`` encoder plugin: discovery, clips and rows, outputs, batching, options, input errors, and a
``<sound>`` prompt through a tiny Qwen2 LLM with the ``mlp2x_gelu`` projector."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from lyra_imagebind.plugin import ImageBindAudioEncoder
from lyra_sdk.errors import ConfigError, MediaError
from lyra_sdk.interfaces import ComponentKind, Encoder, Modality

TINY_QWEN2 = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "intermediate_size": 128, "vocab_size": 151936}


def _encoder(ref, **extra) -> ImageBindAudioEncoder:
    torch.manual_seed(0)
    return ImageBindAudioEncoder.from_options(ImageBindAudioEncoder.Options(**ref.TINY, **extra)).eval()


def _sine(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * 16000)) / 16000
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_entry_point_and_host(ref):
    eps = [ep for ep in metadata.entry_points(group="lyra_sdk") if ep.name == "imagebind"]
    assert len(eps) == 1 and eps[0].value == "lyra_imagebind.plugin" and eps[0].dist.name == "lyra-imagebind"
    from lyra_sdk.plugins import get_plugin_host

    host = get_plugin_host()
    assert host.get(ComponentKind.ENCODER, "imagebind-audio").cls is ImageBindAudioEncoder
    built = host.build(ComponentKind.ENCODER, "imagebind-audio", ref.TINY)
    assert isinstance(built, Encoder) and built.output_dim == 32 and built.modalities == frozenset({Modality.SOUND})


def test_clips_become_rows(ref):
    enc = _encoder(ref)
    feats = enc.featurize([_sine(3.0), _sine(0.5), _sine(10.0)])
    assert feats.tensors["fbank"].shape == (9, 1, 128, 204) and feats.row_item == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    short = feats.tensors["fbank"][3:6]
    assert torch.equal(short[0], short[1]) and torch.equal(short[0], short[2])  # 0.5 s: three copies
    with torch.no_grad():
        out = enc(feats)
    assert out.embeddings.shape == (9, 229, 32) and out.mask.all() and out.grids is None


def test_outputs_tokens_and_embedding(ref):
    tokens_enc = _encoder(ref, final_norm=False)
    emb_enc = _encoder(ref, output="embedding")
    assert emb_enc.output_dim == 24 and emb_enc.tokens_per_clip == 1 and tokens_enc.tokens_per_clip == 229
    emb_enc.load_state_dict(tokens_enc.state_dict())
    feats = tokens_enc.featurize([_sine(3.0)])
    with torch.no_grad():
        raw = tokens_enc(feats).embeddings  # (3, 229, 32)
        torch.testing.assert_close(raw, tokens_enc.model.tokens(feats.tensors["fbank"]), atol=0, rtol=0)
        normed = _encoder(ref)(feats).embeddings
        emb = emb_enc(feats).embeddings  # (3, 1, 24)
        whole = emb_enc.embed([_sine(3.0)])  # (1, 24)
    # final_norm applies the head's LayerNorm (weights 1, biases 0 at init): unit spread per token
    torch.testing.assert_close(normed.std(-1, correction=0), torch.ones(3, 229), atol=1e-3, rtol=0)
    assert emb.shape == (3, 1, 24)
    torch.testing.assert_close(emb.norm(dim=-1), torch.full((3, 1), 20.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(whole, emb[:, 0].mean(0, keepdim=True), atol=1e-6, rtol=0)


def test_chunking_and_batches_agree(ref):
    enc = _encoder(ref, max_batch_clips=4)
    media = [_sine(3.0, 300), _sine(2.5, 900), _sine(4.0, 2000)]
    pieces = list(enc.featurize_batches(media))
    assert [p.row_item for p in pieces] == [[0, 0, 0], [1, 1, 1], [2, 2, 2]]  # 4 // 3 = 1 recording per piece
    with torch.no_grad():
        whole = enc(enc.featurize(media)).embeddings
        parts = torch.cat([enc(p).embeddings for p in pieces])
    torch.testing.assert_close(whole, parts, atol=1e-5, rtol=0)


def test_saved_options_rebuild(ref):
    enc = _encoder(ref, clips=2, output="embedding")
    saved = enc.saved_options()
    assert saved.path is None and saved.embed_dim == 32 and saved.clips == 2 and saved.output == "embedding"
    again = ImageBindAudioEncoder.from_options(ImageBindAudioEncoder.Options.model_validate(saved.model_dump()))
    again.load_state_dict(enc.state_dict(), strict=True)


def test_options_are_validated(ref):
    with pytest.raises(ValidationError, match="extra"):
        ImageBindAudioEncoder.Options(**ref.TINY, clip_second=2.0)
    with pytest.raises(ValidationError, match="output"):
        ImageBindAudioEncoder.Options(output="pooled")
    with pytest.raises(ConfigError, match="divisible"):
        ImageBindAudioEncoder.from_options(ImageBindAudioEncoder.Options(**{**ref.TINY, "num_heads": 5}))
    with pytest.raises(ConfigError, match="smaller than the patch kernel"):
        ImageBindAudioEncoder.from_options(ImageBindAudioEncoder.Options(**ref.TINY, target_length=8))


@pytest.mark.parametrize("item,match", [
    (np.zeros((2, 16000), np.float32), "1-D"),
    (np.zeros(399, np.float32), "at least 400"),
    (np.array([0.0, np.nan] * 400, np.float32), "non-finite"),
    ("dog.wav", "numpy array"),
])
def test_bad_media(ref, item, match):
    with pytest.raises(MediaError, match=match):
        _encoder(ref).featurize([item])


def test_sound_prompt_through_tiny_qwen2(ref):
    from lyra_sdk import Lyra
    from lyra_sdk.prompt import Prompt

    config = {
        "llm": {"plugin": "qwen2", "options": {"tokenizer": "qwen2", "config": TINY_QWEN2}},
        "encoders": {"sound": {"plugin": "imagebind-audio", "options": ref.TINY}},
        "projectors": {"sound": {"plugin": "mlp2x_gelu"}},
    }
    model = Lyra.from_config(config)
    assert model.projectors["sound"].in_dim == 32 and model.projectors["sound"].out_dim == 64
    prompt = Prompt("<sound> what made this sound?", {"sound": [_sine(3.0)]})
    (span,) = model.prepare([prompt]).spans[0]
    assert span.modality is Modality.SOUND and span.length == 3 * 229  # 3 clips x (cls + 12 x 19 patches)
    texts, ids = model.generate_ids([prompt], max_new_tokens=4)
    assert len(texts) == 1 and isinstance(texts[0], str) and 1 <= len(ids[0]) <= 4
