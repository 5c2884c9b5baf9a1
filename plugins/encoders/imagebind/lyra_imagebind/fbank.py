"""ImageBind's audio input in plain torch: clips sampled across a recording, Kaldi log-mel filterbanks, padding.

``kaldi_fbank`` computes what ``torchaudio.compliance.kaldi.fbank`` computes with ImageBind's arguments
(``htk_compat=True, use_energy=False, window_type="hanning", dither=0, frame_length=25, frame_shift=10``) and
torchaudio's defaults for the rest: frames of 400 samples every 160 (``snip_edges``: only whole frames), DC
offset removed per frame, pre-emphasis 0.97, a symmetric Hann window, zero-padding to 512, power spectrum,
triangular mel filters between 20 Hz and Nyquist on Kaldi's mel scale ``1127 ln(1 + f / 700)``, and
``log(max(energy, float32 eps))``; the mel filters are computed in float32 in torchaudio's order, so the result is
bit-identical to torchaudio 2.11's. Note: ImageBind's ``data.py`` asks for ``"hanning"``, not Hamming.

``clip_spans`` reproduces pytorchvideo's ``ConstantClipsPerVideoSampler`` as ImageBind uses it (``clips`` clips of
``clip_seconds`` spread evenly from the start to the end: starts ``k * (duration - clip) / (clips - 1)``; a
recording shorter than one clip gives ``clips`` copies of the whole recording). That is the sampler of
pytorchvideo's main branch, which ImageBind pins by commit; the 0.1.5 release on PyPI divides by ``clips``
instead, so its last clip stops short of the end. ``audio_to_fbanks`` follows ImageBind's
``load_and_transform_audio_data`` after decoding: per clip, subtract the clip's mean, fbank, pad with zeros (or
cut) to ``target_length`` frames, normalise with ImageBind's dataset mean/std. Like the reference, a clip's mean
is subtracted in place from the shared waveform, so overlapping clips see the earlier clips' shift (negligible
for real audio; kept so the features equal the reference's).
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from torch import Tensor

SAMPLE_RATE = 16000
FBANK_MEAN = -4.268
FBANK_STD = 9.138


def _mel(freq: Tensor | float) -> Tensor | float:
    """Kaldi's mel scale, ``1127 ln(1 + f / 700)``."""
    if isinstance(freq, Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


def mel_banks(num_bins: int, padded_window: int, sample_rate: int, low_freq: float = 20.0,
              high_freq: float = 0.0) -> Tensor:
    """Triangular mel filters (num_bins, padded_window // 2 + 1), float32; the Nyquist column is zero (as Kaldi).

    ``high_freq <= 0`` counts back from Nyquist. Computed in float32 in torchaudio's order of operations, so the
    filters equal torchaudio's bit for bit (a float64 computation differs by ~1e-5 relative at some weights).
    """
    nyquist = 0.5 * sample_rate
    high = high_freq + nyquist if high_freq <= 0.0 else high_freq
    if not 0.0 <= low_freq < high <= nyquist:
        raise ValueError(f"need 0 <= low_freq < high_freq <= {nyquist}, got {low_freq}, {high}")
    mel_low, mel_high = _mel(low_freq), _mel(high)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins)[:, None]  # (M, 1)
    left, center, right = mel_low + b * delta, mel_low + (b + 1.0) * delta, mel_low + (b + 2.0) * delta
    fft_mel = _mel(sample_rate / padded_window * torch.arange(padded_window / 2))[None]  # (1, F), float32
    up = (fft_mel - left) / (center - left)  # (M, F)
    down = (right - fft_mel) / (right - center)
    banks = torch.max(torch.zeros(1), torch.min(up, down))  # (M, padded_window / 2)
    return torch.nn.functional.pad(banks, (0, 1))  # (M, padded_window / 2 + 1)


def window_function(kind: str, size: int) -> Tensor:
    """Kaldi's symmetric windows: ``hanning`` (ImageBind), ``hamming`` or ``povey``; float32 (size,)."""
    if kind == "hanning":
        return torch.hann_window(size, periodic=False)
    if kind == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46)
    if kind == "povey":
        return torch.hann_window(size, periodic=False).pow(0.85)
    raise ValueError(f"window {kind!r} is not supported; valid: hanning, hamming, povey")


def kaldi_fbank(waveform: Tensor, num_mel_bins: int = 128, sample_rate: int = SAMPLE_RATE,
                frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0, window: str = "hanning",
                preemphasis: float = 0.97, low_freq: float = 20.0, high_freq: float = 0.0) -> Tensor:
    """(n,) float waveform -> log-mel filterbank (frames, num_mel_bins), frames = 1 + (n - 400) // 160 at 16 kHz.

    Fewer samples than one frame give (0, num_mel_bins). Computed in the waveform's dtype (float32 as the
    reference).
    """
    size = int(sample_rate * frame_length_ms / 1000)
    shift = int(sample_rate * frame_shift_ms / 1000)
    padded = 1 << (size - 1).bit_length()  # next power of two
    if waveform.shape[0] < size:
        return waveform.new_zeros(0, num_mel_bins)
    frames = waveform.unfold(0, size, shift)  # (T, size)
    frames = frames - frames.mean(dim=1, keepdim=True)
    if preemphasis != 0.0:
        previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # x[-1] := x[0], as Kaldi
        frames = frames - preemphasis * previous
    frames = frames * window_function(window, size).to(frames)
    frames = torch.nn.functional.pad(frames, (0, padded - size))  # (T, padded)
    power = torch.fft.rfft(frames).abs().pow(2.0)  # (T, padded / 2 + 1)
    banks = mel_banks(num_mel_bins, padded, sample_rate, low_freq, high_freq).to(power)  # (M, padded / 2 + 1)
    energies = power @ banks.T  # (T, M)
    return torch.clamp(energies, min=torch.finfo(energies.dtype).eps).log()


def clip_spans(num_samples: int, clips: int = 3, clip_seconds: float = 2.0,
               sample_rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """Sample ranges [start, end) of the clips, as pytorchvideo's ConstantClipsPerVideoSampler + ImageBind's
    ``int(t * sample_rate)`` slicing (``end`` may pass the last sample; slicing clamps it)."""
    duration = num_samples / sample_rate
    clip = Fraction(clip_seconds)
    max_start = Fraction(max(duration - clip, 0))  # float arithmetic first, as the reference
    step = Fraction(max_start, max(clips - 1, 1))
    spans = []
    for index in range(clips):
        start = step * index
        spans.append((int(start * sample_rate), int((start + clip) * sample_rate)))
        if step * (index + 1) > max_start:
            break
    return spans


def audio_to_fbanks(waveform: Tensor, clips: int = 3, clip_seconds: float = 2.0, num_mel_bins: int = 128,
                    target_length: int = 204, mean: float = FBANK_MEAN, std: float = FBANK_STD,
                    sample_rate: int = SAMPLE_RATE) -> Tensor:
    """(n,) 16 kHz mono waveform -> normalised clip spectrograms (clips, 1, num_mel_bins, target_length)."""
    shared = waveform.to(torch.float32).clone()  # clips subtract their mean in place, as the reference does
    out = []
    for start, end in clip_spans(shared.shape[0], clips, clip_seconds, sample_rate):
        piece = shared[start:end]
        piece -= piece.mean()
        fbank = kaldi_fbank(piece, num_mel_bins, sample_rate).T  # (M, frames)
        pad = target_length - fbank.shape[1]
        fbank = torch.nn.functional.pad(fbank, (0, pad)) if pad > 0 else fbank[:, :target_length]
        out.append((fbank - mean) / std)
    return torch.stack(out)[:, None]  # (clips, 1, M, target_length)


__all__ = ["FBANK_MEAN", "FBANK_STD", "SAMPLE_RATE", "audio_to_fbanks", "clip_spans", "kaldi_fbank", "mel_banks",
           "window_function"]
