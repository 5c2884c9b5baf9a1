"""Shared helpers of the imagebind plugin tests: tiny configs, test signals and a naive Kaldi fbank in numpy."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

SR = 16000
TINY = dict(embed_dim=32, num_blocks=2, num_heads=4, mlp_dim=64, out_embed_dim=24)
"""A tiny audio branch on ImageBind's real input geometry (128 mel bins x 204 frames -> 229 tokens per clip)."""


def signal(seconds: float, seed: int = 0) -> np.ndarray:
    """A seeded test sound: two sines, a chirp and noise, with a DC offset; float32 16 kHz."""
    t = np.arange(round(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3100 * t + 1.0)
    x += 0.1 * np.sin(2 * np.pi * (200 + 900 * t) * t) + 0.05 * rng.standard_normal(t.shape) + 0.02
    return x.astype(np.float32)


def kaldi_mel(freq: float) -> float:
    """Kaldi's MelScale."""
    return 1127.0 * math.log(1.0 + freq / 700.0)


def naive_mel_banks(num_bins: int, padded: int = 512, sr: int = SR, low: float = 20.0) -> np.ndarray:
    """Kaldi's MelBanks, loop by loop (mel-computations.cc): (num_bins, padded // 2), float64."""
    n_fft_bins = padded // 2
    width = sr / padded
    mel_low, mel_high = kaldi_mel(low), kaldi_mel(sr / 2)
    delta = (mel_high - mel_low) / (num_bins + 1)
    banks = np.zeros((num_bins, n_fft_bins))
    for b in range(num_bins):
        left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
        for i in range(n_fft_bins):
            mel = kaldi_mel(width * i)
            if left < mel < right:
                banks[b, i] = (mel - left) / (center - left) if mel <= center else (right - mel) / (right - center)
    return banks


def naive_fbank(wave: np.ndarray, num_bins: int = 128, window: str = "hanning") -> np.ndarray:
    """Kaldi's fbank (snip_edges, no dither, DC removal, pre-emphasis 0.97, 25/10 ms, power, log) in float64
    with an explicit DFT: (frames, num_bins)."""
    size, shift, padded = 400, 160, 512
    n_frames = 1 + (len(wave) - size) // shift if len(wave) >= size else 0
    n = np.arange(size)
    a = 2 * np.pi / (size - 1)
    win = 0.5 - 0.5 * np.cos(a * n) if window == "hanning" else 0.54 - 0.46 * np.cos(a * n)
    k = np.arange(padded // 2 + 1)
    angle = 2 * np.pi * np.outer(np.arange(padded), k) / padded  # (512, 257)
    cos, sin = np.cos(angle), np.sin(angle)
    banks = naive_mel_banks(num_bins)
    eps = float(np.finfo(np.float32).eps)
    out = np.zeros((n_frames, num_bins))
    for f in range(n_frames):
        frame = wave[f * shift : f * shift + size].astype(np.float64)
        frame = frame - frame.mean()
        for i in range(size - 1, 0, -1):
            frame[i] -= 0.97 * frame[i - 1]
        frame[0] -= 0.97 * frame[0]
        frame = np.concatenate([frame * win, np.zeros(padded - size)])
        power = (frame @ cos) ** 2 + (frame @ sin) ** 2  # (257,)
        out[f] = np.log(np.maximum(banks @ power[: padded // 2], eps))
    return out


@pytest.fixture(scope="session")
def ref():
    """The helpers above (test modules cannot import conftest under ``--import-mode=importlib``)."""
    return SimpleNamespace(SR=SR, TINY=dict(TINY), signal=signal, naive_fbank=naive_fbank,
                           naive_mel_banks=naive_mel_banks)
