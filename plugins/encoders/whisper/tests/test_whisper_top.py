"""``trainable: top`` support: the stem (convolutions + first layers) then the top equals the whole encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lyra_whisper.plugin import WhisperEncoder

from .conftest import TINY


@pytest.mark.parametrize("n", [1, 2])
def test_stem_then_top_equals_forward(n, perturb):
    enc = WhisperEncoder.from_options(WhisperEncoder.Options(**TINY, max_batch_windows=1))
    perturb(enc, 0)
    gen = np.random.default_rng(0)
    feats = enc.featurize([gen.standard_normal(16000 * 2).astype(np.float32) * 0.1,
                           gen.standard_normal(16000 * 31).astype(np.float32) * 0.1])  # 3 windows
    with torch.no_grad():
        whole = enc(feats)
        stem = enc.forward_stem(feats, n)
        split = enc.forward_top(stem, n)
    assert stem.embeddings.shape == whole.embeddings.shape == (3, 1500, 64)
    torch.testing.assert_close(split.embeddings, whole.embeddings, rtol=0, atol=0)
    assert torch.equal(split.mask, whole.mask) and split.mask.sum(1).tolist() == [100, 1500, 50]
    if n < 2:  # the stem really stops below the top: it is not the output yet
        assert not torch.allclose(stem.embeddings, whole.embeddings)


def test_top_modules_are_the_last_layers_and_the_final_norm():
    enc = WhisperEncoder.from_options(WhisperEncoder.Options(**TINY))
    mods = enc.top_modules(1)
    assert mods[0] is enc.encoder.layers[1] and mods[-1] is enc.encoder.layer_norm
    assert len(enc.top_modules(2)) == 3
    for bad in (0, 3):
        with pytest.raises(ValueError, match="top_layers must be 1..2"):
            enc.top_modules(bad)
