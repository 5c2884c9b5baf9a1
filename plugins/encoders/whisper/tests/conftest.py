"""Shared fixtures of the whisper plugin tests: tiny deterministic configs and reference models."""

from __future__ import annotations

import pytest
import torch

from lyra_whisper.model import WhisperEncoderConfig

TINY = dict(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, max_source_positions=1500)


def perturb_(module: torch.nn.Module, seed: int, scale: float = 0.02) -> None:
    """Add seeded noise to every parameter and buffer so that LayerNorms and biases are not trivially 1/0."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.is_floating_point() and t.layout == torch.strided:
                t.add_(torch.randn(t.shape, generator=gen) * scale)


@pytest.fixture
def perturb():
    """``perturb(module, seed)``: seeded noise on every parameter (see :func:`perturb_`)."""
    return perturb_


@pytest.fixture
def tiny_config():
    """A factory of tiny encoder configs (64 wide, 2 layers) with 80 or 128 mel bins."""
    return lambda n_mels=80: WhisperEncoderConfig(num_mel_bins=n_mels, **TINY)


@pytest.fixture
def hf_whisper_config():
    """A factory of tiny ``transformers.WhisperConfig`` objects (encoder as TINY, one decoder layer)."""
    from transformers import WhisperConfig

    def make(n_mels: int = 80) -> WhisperConfig:
        return WhisperConfig(
            num_mel_bins=n_mels, vocab_size=128, d_model=64, encoder_layers=2, encoder_attention_heads=4,
            encoder_ffn_dim=128, decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=128,
            max_source_positions=1500, max_target_positions=32, pad_token_id=1, bos_token_id=2, eos_token_id=3,
            decoder_start_token_id=2, suppress_tokens=None, begin_suppress_tokens=None,
        )

    return make


@pytest.fixture
def mel_batch():
    """A factory of seeded random log-mel batches (B, n_mels, 3000) in Whisper's value range."""
    def make(batch: int, n_mels: int, seed: int = 0) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.rand(batch, n_mels, 3000, generator=gen) * 2 - 1

    return make
