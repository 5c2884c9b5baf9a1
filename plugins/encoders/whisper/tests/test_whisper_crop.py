"""``crop_from_layer``: the later layers run on each window's valid frames only, never on its silent padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lyra_sdk.encoder_cache import EncoderCache
from lyra_sdk.errors import ConfigError
from lyra_whisper.plugin import WhisperEncoder

from .conftest import TINY


def _encoder(perturb, crop, **extra):
    torch.manual_seed(0)  # the same weights for every crop setting
    enc = WhisperEncoder.from_options(WhisperEncoder.Options(**TINY, crop_from_layer=crop, **extra))
    perturb(enc, 0)
    return enc


def _clips():
    gen = np.random.default_rng(0)
    return [gen.standard_normal(16000 * 2).astype(np.float32) * 0.1,  # 100 valid frames
            gen.standard_normal(16000 * 31).astype(np.float32) * 0.1]  # a full window, then 50 frames


@pytest.mark.parametrize("crop", [0, 1])
def test_cropped_layers_see_only_the_valid_frames(crop, perturb):
    enc = _encoder(perturb, crop)
    feats = enc.featurize(_clips())
    with torch.no_grad():
        out = enc(feats)
        plain = WhisperEncoder.forward(_encoder(perturb, None), feats)
        # the reference: the same layers, uncropped, run on a window that holds only the valid frames
        hidden = enc.encoder.stem(feats.tensors["input_features"], len(enc.encoder.layers) - crop)  # below crop
        for row, n in enumerate(feats.valid_lengths):
            x = hidden[row : row + 1, :n]
            for layer in enc.encoder.layers[crop:]:
                x = layer(x)
            torch.testing.assert_close(out.embeddings[row, :n], enc.encoder.layer_norm(x)[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(out.mask, plain.mask) and out.mask.sum(1).tolist() == [100, 1500, 50]
    torch.testing.assert_close(out.embeddings[1], plain.embeddings[1], rtol=1e-5, atol=1e-5)  # full window: same
    assert not torch.allclose(out.embeddings[0, :100], plain.embeddings[0, :100], atol=1e-4)  # padding mattered


@pytest.mark.parametrize("crop, n", [(0, 1), (0, 2), (1, 1), (1, 2)])
def test_stem_then_top_equals_forward_when_cropping(crop, n, perturb):
    enc = _encoder(perturb, crop, max_batch_windows=2)
    feats = enc.featurize(_clips())
    with torch.no_grad():
        whole = enc(feats)
        split = enc.forward_top(enc.forward_stem(feats, n), n)
    torch.testing.assert_close(split.embeddings, whole.embeddings, rtol=0, atol=0)


def test_gradients_reach_the_cropped_layers(perturb):
    enc = _encoder(perturb, 1)
    feats = enc.featurize(_clips()[:1])
    out = enc(feats)
    out.embeddings[out.mask].square().mean().backward()
    grad = enc.encoder.layers[1].fc1.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_the_cache_fingerprint_follows_the_crop(perturb):
    cache = EncoderCache(1 << 20)
    plain, cropped0, cropped1 = _encoder(perturb, None), _encoder(perturb, 0), _encoder(perturb, 1)
    assert cache.fingerprint(plain) != cache.fingerprint(cropped0) != cache.fingerprint(cropped1)
    # a crop inside the trained top does not change the stem, so a stem cache stays valid ...
    assert cache.fingerprint(plain, 1) == cache.fingerprint(cropped1, 1)
    # ... one reaching into the stem does
    assert cache.fingerprint(plain, 1) != cache.fingerprint(cropped0, 1)


def test_bad_crop_is_refused_and_the_option_is_saved(perturb):
    with pytest.raises(ConfigError, match="crop_from_layer.*below encoder_layers"):
        WhisperEncoder.from_options(WhisperEncoder.Options(**TINY, crop_from_layer=2))
    assert _encoder(perturb, 1).saved_options().crop_from_layer == 1
