"""ImageBind's audio features: the torch Kaldi fbank against a naive numpy Kaldi (and torchaudio when it imports),
the clip sampler, and the whole per-recording pipeline against a numpy re-statement of ImageBind's data.py."""

from __future__ import annotations

import importlib.util
from fractions import Fraction

import numpy as np
import pytest
import torch

from lyra_imagebind.fbank import FBANK_MEAN, FBANK_STD, audio_to_fbanks, clip_spans, kaldi_fbank, mel_banks

SR = 16000
FBANK_ATOL = 2e-3  # log-mel, float32 (ours, as torchaudio) vs float64 (naive). Measured: median |diff| ~3e-6 (the
# float32 mel filters, as torchaudio's), max ~7e-4 at bins whose energy is ~1e-6 of the frame's peak; see _close.


def _close(got: np.ndarray, expected: np.ndarray) -> None:
    diff = np.abs(got - expected)
    assert diff.max() < FBANK_ATOL, diff.max()
    assert np.median(diff) < 1e-5, np.median(diff)  # typical bins agree to float32 precision


def test_mel_banks_equal_kaldi_loops(ref):
    ours = mel_banks(128, 512, SR).double().numpy()
    assert ours.shape == (128, 257) and not ours[:, 256].any()
    np.testing.assert_allclose(ours[:, :256], ref.naive_mel_banks(128), atol=3e-5, rtol=0)  # float32: max ~1.4e-5


@pytest.mark.parametrize("window", ["hanning", "hamming"])
def test_fbank_equals_naive_kaldi(window, ref):
    wave = ref.signal(0.7, seed=1)  # 11200 samples -> 68 frames
    got = kaldi_fbank(torch.from_numpy(wave), 128, window=window).numpy()
    expected = ref.naive_fbank(wave, 128, window)
    assert got.shape == expected.shape == (68, 128) and got.dtype == np.float32
    _close(got, expected)


def test_fbank_frame_count_and_silence():
    assert kaldi_fbank(torch.zeros(32000)).shape == (198, 128)  # 2 s -> 198 frames (ImageBind pads to 204)
    assert kaldi_fbank(torch.zeros(399)).shape == (0, 128)
    silent = kaldi_fbank(torch.zeros(1000))
    assert torch.allclose(silent, torch.full_like(silent, float(np.log(np.finfo(np.float32).eps))))


@pytest.mark.skipif(importlib.util.find_spec("torchaudio") is None,
                    reason="torchaudio is not importable here (it breaks transformers on CPU machines); the fbank is "
                           "checked against a naive numpy Kaldi implementation instead")
def test_fbank_equals_torchaudio_kaldi(ref):
    from torchaudio.compliance import kaldi

    wave = torch.from_numpy(ref.signal(1.3, seed=2))
    expected = kaldi.fbank(wave[None], htk_compat=True, sample_frequency=SR, use_energy=False, window_type="hanning",
                           num_mel_bins=128, dither=0.0, frame_length=25, frame_shift=10)
    torch.testing.assert_close(kaldi_fbank(wave), expected, atol=1e-5, rtol=0)  # bit-identical with torchaudio 2.11


def _sampler_spans(n: int, clips: int, seconds: float) -> list[tuple[int, int]]:
    """pytorchvideo's ConstantClipsPerVideoSampler driven as ImageBind's get_clip_timepoints, re-stated."""
    duration, clip = n / SR, Fraction(seconds)
    index, spans, last = 0, [], False
    while not last:
        max_start = Fraction(max(duration - clip, 0))
        step = Fraction(max_start, max(clips - 1, 1))
        start = step * index
        index += 1
        last = index >= clips or step * index > max_start
        spans.append((int(start * SR), int((start + clip) * SR)))
    return spans


@pytest.mark.parametrize("n,clips,seconds", [(48000, 3, 2.0), (160000, 3, 2.0), (16000, 3, 2.0), (48001, 3, 2.0),
                                             (32000, 3, 2.0), (100003, 5, 1.5), (48000, 1, 2.0), (12345, 2, 0.5)])
def test_clip_spans_follow_the_sampler(n, clips, seconds):
    assert clip_spans(n, clips, seconds) == _sampler_spans(n, clips, seconds)


def test_clip_spans_examples():
    assert clip_spans(48000) == [(0, 32000), (8000, 40000), (16000, 48000)]  # 3 s: overlapping clips
    assert clip_spans(160000) == [(0, 32000), (64000, 96000), (128000, 160000)]  # 10 s
    assert clip_spans(16000) == [(0, 32000)] * 3  # shorter than a clip: 3 copies of the whole recording


def _reference_pipeline(ref, wave: np.ndarray, clips: int = 3, seconds: float = 2.0, target: int = 204) -> np.ndarray:
    """ImageBind's load_and_transform_audio_data after decoding, re-stated with the naive fbank."""
    shared = wave.astype(np.float32).copy()
    out = []
    for start, end in _sampler_spans(len(shared), clips, seconds):
        view = shared[start:end]
        view -= view.mean(dtype=np.float32)  # in place on the shared waveform, as the reference
        fb = ref.naive_fbank(view).T  # (128, frames)
        fb = np.pad(fb, ((0, 0), (0, target - fb.shape[1]))) if fb.shape[1] < target else fb[:, :target]
        out.append((fb - FBANK_MEAN) / FBANK_STD)
    return np.stack(out)[:, None]


@pytest.mark.parametrize("seconds", [3.0, 1.2])
def test_pipeline_equals_reference_restatement(seconds, ref):
    wave = ref.signal(seconds, seed=3)
    got = audio_to_fbanks(torch.from_numpy(wave)).numpy()
    expected = _reference_pipeline(ref, wave)
    assert got.shape == expected.shape == (3, 1, 128, 204)
    _close(got * FBANK_STD, expected * FBANK_STD)
    pad = (0.0 - FBANK_MEAN) / FBANK_STD
    np.testing.assert_allclose(got[:, 0, :, 198:], pad, rtol=0, atol=1e-6)  # 2 s = 198 frames, zero-padded to 204


def test_pipeline_does_not_modify_the_input(ref):
    wave = torch.from_numpy(ref.signal(3.0))
    before = wave.clone()
    audio_to_fbanks(wave)
    assert torch.equal(wave, before)
