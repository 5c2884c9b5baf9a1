"""The ``whisper`` encoder plugin: discovery, windowing, masks, batching, saved options and input errors."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from lyra_sdk.errors import ConfigError, MediaError
from lyra_sdk.interfaces import ComponentKind, Encoder, Modality
from lyra_whisper.plugin import WhisperEncoder

TINY = dict(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128)
SR = 16000


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return WhisperEncoder.from_options(WhisperEncoder.Options(**TINY, max_batch_windows=2)).eval()


def _clip(samples: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(samples)).astype(np.float32)


def test_entry_point_is_declared():
    eps = [ep for ep in metadata.entry_points(group="lyra_sdk") if ep.name == "whisper"]
    assert len(eps) == 1 and eps[0].value == "lyra_whisper.plugin" and eps[0].dist.name == "lyra-whisper"
    assert eps[0].load().WhisperEncoder is WhisperEncoder


def test_plugin_host_builds_it():
    from lyra_sdk.plugins import get_plugin_host

    host = get_plugin_host()
    entry = host.get(ComponentKind.ENCODER, "whisper")
    assert entry.cls is WhisperEncoder and entry.package == "lyra-whisper"
    built = host.build(ComponentKind.ENCODER, "whisper", {**TINY, "num_mel_bins": 128})
    assert isinstance(built, Encoder) and built.output_dim == 64 and built.n_mels == 128
    assert built.modalities == frozenset({Modality.SPEECH, Modality.SOUND})


@pytest.mark.parametrize("seconds,windows", [(0.5, 1), (30.0, 1), (30.0 + 1 / SR, 2), (61.0, 3)])
def test_exact_window_count(encoder, seconds, windows):
    samples = round(seconds * SR)
    features = encoder.featurize([_clip(samples)])
    assert features.tensors["input_features"].shape == (windows, 80, 3000)
    assert features.row_item == [0] * windows
    last = samples - (windows - 1) * 480000
    assert features.valid_lengths == [1500] * (windows - 1) + [min(1500, -(-last // 320))]


def test_valid_lengths_and_mask_for_several_clips(encoder):
    clips = [_clip(8000, 1), _clip(16000 * 61, 2), _clip(480000, 3)]
    features = encoder.featurize(clips)
    assert features.row_item == [0, 1, 1, 1, 2]
    assert features.valid_lengths == [25, 1500, 1500, 50, 1500]  # 0.5 s -> 25; 61 s -> 30 + 30 + 1 s
    with torch.no_grad():
        out = encoder(features)
    assert out.embeddings.shape == (5, 1500, 64) and out.mask.shape == (5, 1500) and out.mask.dtype == torch.bool
    assert out.mask.sum(1).tolist() == features.valid_lengths
    assert out.mask[0, :25].all() and not out.mask[0, 25:].any()


def test_batching_does_not_change_results(encoder):
    features = encoder.featurize([_clip(16000 * 61, 4)])  # 3 windows, max_batch_windows=2 -> chunks of 2 + 1
    with torch.no_grad():
        chunked = encoder(features).embeddings
        whole = encoder.encoder(features.tensors["input_features"])
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)


def test_forward_follows_module_dtype():
    torch.manual_seed(0)
    enc = WhisperEncoder.from_options(WhisperEncoder.Options(**TINY)).to(torch.float64).eval()
    with torch.no_grad():
        out = enc(enc.featurize([_clip(4000)]))
    assert out.embeddings.dtype == torch.float64


def test_saved_options_rebuild_without_checkpoint(encoder):
    saved = encoder.saved_options()
    assert saved.path is None and saved.d_model == 64 and saved.encoder_layers == 2
    rebuilt = WhisperEncoder.from_options(WhisperEncoder.Options.model_validate(saved.model_dump()))
    rebuilt.load_state_dict(encoder.state_dict(), strict=True)
    assert set(encoder.state_dict()) >= {"encoder.conv1.weight", "encoder.layers.1.self_attn.k_proj.weight"}


def test_options_are_validated():
    with pytest.raises(ValidationError, match="extra"):
        WhisperEncoder.Options(d_modle=64)
    with pytest.raises(ValidationError, match="num_mel_bins"):
        WhisperEncoder.Options(num_mel_bins=64)
    with pytest.raises(ConfigError, match="divisible"):
        WhisperEncoder.from_options(WhisperEncoder.Options(d_model=64, encoder_attention_heads=5))
    with pytest.raises(ConfigError, match="max_source_positions"):
        WhisperEncoder.from_options(WhisperEncoder.Options(**TINY, max_source_positions=750))


@pytest.mark.parametrize("item,match", [
    (np.zeros((2, 16000), np.float32), "1-D"),
    (np.zeros(0, np.float32), "empty"),
    (np.array([0.0, np.nan], np.float32), "non-finite"),
    ("speech.wav", "numpy array"),
])
def test_bad_media(encoder, item, match):
    with pytest.raises(MediaError, match=match):
        encoder.featurize([item])
