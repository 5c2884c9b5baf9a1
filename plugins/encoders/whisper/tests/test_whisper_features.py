"""Log-mel features and window arithmetic of the whisper plugin."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lyra_whisper.features import log_mel_spectrogram, mel_filters, num_windows, split_windows, valid_frames


def _signal(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.4 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_matches_transformers(n_mels):
    from transformers import WhisperFeatureExtractor

    audio = _signal(7.3)
    extractor = WhisperFeatureExtractor(feature_size=n_mels)
    windows, _ = split_windows(audio)
    ours = log_mel_spectrogram(torch.from_numpy(windows), n_mels).numpy()  # (1, n_mels, 3000)
    ref_torch = extractor(audio, sampling_rate=16000, return_tensors="np").input_features  # torch STFT path
    ref_numpy = extractor._np_extract_fbank_features(windows, "cpu")  # numpy STFT path
    assert ours.shape == ref_torch.shape == (1, n_mels, 3000)
    np.testing.assert_allclose(ours, ref_torch, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours, ref_numpy, atol=1e-4, rtol=0)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_match_librosa_bank_shipped_with_openai_whisper(n_mels):
    whisper_audio = pytest.importorskip("whisper.audio")
    ref = whisper_audio.mel_filters("cpu", n_mels)  # librosa.filters.mel(16000, 400, n_mels), stored in an npz
    torch.testing.assert_close(mel_filters(n_mels), ref, atol=1e-7, rtol=1e-5)


def test_batched_windows_are_independent():
    audio = np.concatenate([_signal(30.0, seed=1), 0.01 * _signal(5.0, seed=2)])
    windows, valid = split_windows(audio)
    both = log_mel_spectrogram(torch.from_numpy(windows), 80)
    one = log_mel_spectrogram(torch.from_numpy(windows[1:]), 80)
    torch.testing.assert_close(both[1:], one)
    assert valid == [480000, 80000]


@pytest.mark.parametrize("samples,windows", [(1, 1), (8000, 1), (480000, 1), (480001, 2), (16000 * 61, 3), (960000, 2)])
def test_num_windows_exact(samples, windows):
    assert num_windows(samples) == windows


def test_valid_frames():
    assert valid_frames(1) == 1
    assert valid_frames(320) == 1
    assert valid_frames(321) == 2
    assert valid_frames(8000) == 25
    assert valid_frames(480000) == 1500
