"""Whisper log-mel features in plain torch, matching ``transformers``' WhisperFeatureExtractor.

A 30 s window (480,000 samples at 16 kHz, zero-padded) -> a periodic Hann STFT (n_fft 400, hop 160, centred
with reflect padding) -> power spectrum without the last frame -> Slaney mel filterbank -> log10 (floor 1e-10)
-> clamp to (max - 8) per window -> (x + 4) / 4. Result: (n_mels, 3000) per window.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
WINDOW_SECONDS = 30
WINDOW_SAMPLES = SAMPLE_RATE * WINDOW_SECONDS  # 480,000
WINDOW_FRAMES = WINDOW_SAMPLES // HOP_LENGTH  # 3,000 mel frames
SAMPLES_PER_TOKEN = 2 * HOP_LENGTH  # conv2 has stride 2: one encoder frame per 320 samples (20 ms)

# Slaney's mel scale: linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Hertz -> Slaney mels (the scale of librosa's ``htk=False``)."""
    freq = np.asarray(freq, dtype=np.float64)
    mels = freq / _F_SP
    log_region = freq >= _MIN_LOG_HZ
    mels[log_region] = _MIN_LOG_MEL + np.log(freq[log_region] / _MIN_LOG_HZ) / _LOGSTEP
    return mels


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Slaney mels -> Hertz (inverse of :func:`hz_to_mel`)."""
    mels = np.asarray(mels, dtype=np.float64)
    freq = mels * _F_SP
    log_region = mels >= _MIN_LOG_MEL
    freq[log_region] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels[log_region] - _MIN_LOG_MEL))
    return freq


@lru_cache(maxsize=8)
def mel_filters(n_mels: int, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """Slaney-normalised triangular mel filterbank, (n_mels, n_fft // 2 + 1) float32, 0 Hz to Nyquist."""
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)  # (F,)
    mel_points = np.linspace(hz_to_mel(np.array([0.0]))[0], hz_to_mel(np.array([sample_rate / 2]))[0], n_mels + 2)
    hz_points = mel_to_hz(mel_points)  # (n_mels + 2,) band edges and centres
    widths = np.diff(hz_points)  # (n_mels + 1,)
    ramps = hz_points[:, None] - fft_freqs[None, :]  # (n_mels + 2, F)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))  # (n_mels, F)
    weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]  # Slaney area normalisation
    return torch.from_numpy(weights.astype(np.float32))


def log_mel_spectrogram(windows: Tensor, n_mels: int) -> Tensor:
    """(N, 480000) float waveform windows at 16 kHz -> (N, n_mels, 3000) normalised log-mel features."""
    windows = windows.to(torch.float32)
    hann = torch.hann_window(N_FFT, periodic=True, device=windows.device)
    stft = torch.stft(windows, N_FFT, HOP_LENGTH, window=hann, center=True, pad_mode="reflect", return_complex=True)
    power = stft[..., :-1].abs() ** 2  # (N, 201, 3000): the last centred frame is dropped, as Whisper does
    mel = mel_filters(n_mels).to(windows.device) @ power  # (N, n_mels, 3000)
    log_spec = torch.clamp(mel, min=1e-10).log10()
    peak = log_spec.amax(dim=(1, 2), keepdim=True)  # (N, 1, 1): the dynamic range is limited per window
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return (log_spec + 4.0) / 4.0


def num_windows(num_samples: int) -> int:
    """Number of non-overlapping 30 s windows for a clip: ceil(samples / 480000), at least 1.

    An exact multiple of 30 s adds no all-silence window.
    """
    return max(1, -(-num_samples // WINDOW_SAMPLES))


def split_windows(audio: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """(samples,) 16 kHz clip -> ((W, 480000) zero-padded windows, valid samples per window)."""
    count = num_windows(audio.shape[0])
    padded = np.zeros(count * WINDOW_SAMPLES, dtype=np.float32)
    padded[: audio.shape[0]] = audio
    valid = [min(WINDOW_SAMPLES, audio.shape[0] - i * WINDOW_SAMPLES) for i in range(count)]
    return padded.reshape(count, WINDOW_SAMPLES), valid


def valid_frames(valid_samples: int, max_frames: int = WINDOW_FRAMES // 2) -> int:
    """Encoder frames that carry real audio: ceil(samples / 320), capped at 1500 per window."""
    return min(max_frames, -(-valid_samples // SAMPLES_PER_TOKEN))
