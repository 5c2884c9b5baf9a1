"""Frozen-encoder outputs memoised per media file: same tokens as encoding afresh, bounded memory."""

from __future__ import annotations

import numpy as np
import soundfile as sf
import torch

from lyra_sdk.encoder_cache import EncodedRow, EncoderCache
from lyra_sdk.prompt import Prompt


def _clips(tmp_path, tone, n=3):
    paths = []
    for i in range(n):
        p = tmp_path / f"c{i}.wav"
        sf.write(p, tone(1.0 + 0.5 * i, freq=300.0 + 100 * i), 16000)
        paths.append(str(p))
    return paths


def test_cached_encoding_equals_fresh_and_skips_the_encoder(audio_model, tone, tmp_path):
    paths = _clips(tmp_path, tone)
    prompts = [Prompt("<speech> what is this?", {"speech": [p]}) for p in paths]
    fresh = audio_model.prepare(prompts)
    audio_model.encoder_cache = EncoderCache(64 * 2**20)
    try:
        first = audio_model.prepare(prompts)
        assert len(audio_model.encoder_cache) == 3 and audio_model.encoder_cache.hits == 0
        calls = []
        enc = audio_model.encoders["speech"]
        handle = enc.register_forward_hook(lambda *a: calls.append(1))
        try:
            second = audio_model.prepare(prompts)
        finally:
            handle.remove()
        assert not calls, "a cached clip went through the encoder again"
        assert audio_model.encoder_cache.hits == 3
        for b in (first, second):
            torch.testing.assert_close(b.inputs_embeds, fresh.inputs_embeds, rtol=0, atol=1e-6)
        # an edited file is encoded again
        sf.write(paths[0], tone(2.0, freq=900.0), 16000)
        audio_model.prepare(prompts[:1])
        assert audio_model.encoder_cache.misses == 4
    finally:
        audio_model.encoder_cache = None


def test_trainable_encoder_is_never_cached(audio_model, tone, tmp_path):
    paths = _clips(tmp_path, tone, 1)
    audio_model.encoder_cache = EncoderCache(64 * 2**20)
    enc = audio_model.encoders["speech"]
    try:
        enc.requires_grad_(True)
        audio_model.prepare([Prompt("<speech>", {"speech": paths})])
        assert len(audio_model.encoder_cache) == 0
    finally:
        enc.requires_grad_(False)
        audio_model.encoder_cache = None


def test_byte_budget_evicts_least_recently_used():
    row = EncodedRow(torch.zeros(10, 10), torch.ones(10, dtype=torch.bool), None)  # 410 bytes
    cache = EncoderCache(1000)
    for k in "abc":
        cache.put(("speech", k, 0, 0), [row])
    assert len(cache) == 2 and cache.nbytes <= 1000
    assert cache.get(("speech", "a", 0, 0)) is None and cache.get(("speech", "c", 0, 0)) is not None
    assert EncoderCache.key("speech", np.zeros(3)) is None  # in-memory audio has no key


def test_disk_cache_serves_a_new_run_and_is_keyed_by_encoder_weights(audio_model, tone, tmp_path):
    paths = _clips(tmp_path, tone)
    prompts = [Prompt("<speech> what is this?", {"speech": [p]}) for p in paths]
    fresh = audio_model.prepare(prompts)
    enc = audio_model.encoders["speech"]
    store = tmp_path / "cache"
    try:
        audio_model.encoder_cache = EncoderCache(0, store)  # disk only
        audio_model.prepare(prompts)
        assert len(list(store.glob("*.safetensors"))) == 3 and not list(store.glob("*.tmp"))
        audio_model.encoder_cache = EncoderCache(64 * 2**20, store)  # a later run
        calls = []
        handle = enc.register_forward_hook(lambda *a: calls.append(1))
        try:
            again = audio_model.prepare(prompts)
        finally:
            handle.remove()
        assert not calls and audio_model.encoder_cache.disk_hits == 3
        torch.testing.assert_close(again.inputs_embeds, fresh.inputs_embeds, rtol=0, atol=0)
        # a corrupt entry is a miss, rewritten; never an error (one clip alone: this tiny encoder pads a batch
        # to its longest clip, so a clip's boundary tokens depend on its batch; Whisper pads each to 30 s)
        audio_model.encoder_cache = None
        fresh_one = audio_model.prepare(prompts[:1])
        victim = EncoderCache(0, store)._file(EncoderCache.key("speech", paths[0]), enc)
        victim.write_bytes(b"not a safetensors file")
        audio_model.encoder_cache = EncoderCache(64 * 2**20, store)
        torch.testing.assert_close(audio_model.prepare(prompts[:1]).inputs_embeds, fresh_one.inputs_embeds,
                                   rtol=0, atol=0)
        assert audio_model.encoder_cache.misses == 1 and audio_model.encoder_cache.disk_hits == 0
        audio_model.encoder_cache = EncoderCache(64 * 2**20, store)
        audio_model.prepare(prompts[:1])
        assert audio_model.encoder_cache.disk_hits == 1  # rewritten, readable again
        # other encoder weights: other entries
        saved = {k: v.clone() for k, v in enc.state_dict().items()}
        with torch.no_grad():
            next(enc.parameters()).add_(0.01)
        try:
            audio_model.encoder_cache = EncoderCache(64 * 2**20, store)
            audio_model.prepare(prompts)
            assert audio_model.encoder_cache.disk_hits == 0 and audio_model.encoder_cache.misses == 3
            assert len(list(store.glob("*.safetensors"))) == 6
        finally:
            enc.load_state_dict(saved)
    finally:
        audio_model.encoder_cache = None
