"""An example third-party Lyra plugin: ``logmel-patch``, a small trainable encoder for speech and sound.

It computes a log-mel spectrogram in plain torch, groups ``frames_per_token`` frames into one patch and maps
each patch to ``output_dim`` with a linear layer and a GELU MLP. Use it as a template for your own encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import torch
from pydantic import Field
from torch import nn

from lyra_sdk import Modality, hookimpl
from lyra_sdk.errors import MediaError
from lyra_sdk.interfaces import Encoder, Features, MediaEmbeddings, PluginOptions


class LogMelPatchEncoder(Encoder):
    """Log-mel frames (10 ms hop at 16 kHz) -> patches of ``frames_per_token`` frames -> (N, T, output_dim)."""

    modalities = frozenset({Modality.SPEECH, Modality.SOUND})

    class Options(PluginOptions):
        """Options of ``logmel-patch``."""

        n_mels: int = Field(64, gt=0)
        frames_per_token: int = Field(4, gt=0)
        output_dim: int = Field(128, gt=0)
        max_seconds: float = Field(60.0, gt=0, description="longer clips are refused")

    def __init__(self, options: Options) -> None:
        super().__init__()
        self.options = options
        self.output_dim = options.output_dim
        self.proj = nn.Sequential(nn.Linear(options.n_mels * options.frames_per_token, options.output_dim),
                                  nn.GELU(), nn.Linear(options.output_dim, options.output_dim))
        self.register_buffer("window", torch.hann_window(400), persistent=False)
        mel = torch.linspace(0, 2595 * np.log10(1 + 8000 / 700), options.n_mels + 2)
        hz = 700 * (10 ** (mel / 2595) - 1)
        bins = torch.linspace(0, 8000, 201)
        lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
        fb = torch.clamp(torch.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), min=0)  # (n_mels, 201)
        self.register_buffer("mel_fb", fb, persistent=False)

    @classmethod
    def from_options(cls, options: Options) -> Self:
        """Random weights."""
        return cls(options)

    def featurize(self, media: Sequence[np.ndarray]) -> Features:
        """16 kHz mono arrays -> padded waveforms (N, S) plus valid token counts."""
        limit = int(self.options.max_seconds * 16000)
        for i, a in enumerate(media):
            if len(a) > limit:
                raise MediaError(f"item {i}: {len(a) / 16000:.1f} s is longer than max_seconds={self.options.max_seconds}")
        longest = max(len(a) for a in media)
        wav = torch.zeros(len(media), longest)
        for i, a in enumerate(media):
            wav[i, : len(a)] = torch.from_numpy(np.asarray(a, dtype=np.float32))
        fpt = self.options.frames_per_token
        valid = [max(1, (len(a) // 160) // fpt) for a in media]
        return Features({"wav": wav}, row_item=list(range(len(media))), valid_lengths=valid)

    def forward(self, features: Features) -> MediaEmbeddings:
        """(N, S) -> (N, T, output_dim)."""
        wav = features.tensors["wav"]
        spec = torch.stft(wav.float(), 400, 160, window=self.window, return_complex=True).abs() ** 2  # (N, 201, F)
        logmel = torch.log10(torch.clamp(self.mel_fb @ spec, min=1e-10)).transpose(1, 2)  # (N, F, n_mels)
        fpt = self.options.frames_per_token
        t = max(1, logmel.shape[1] // fpt)
        logmel = torch.nn.functional.pad(logmel, (0, 0, 0, max(0, t * fpt - logmel.shape[1])))
        patches = logmel[:, : t * fpt].reshape(wav.shape[0], t, fpt * logmel.shape[-1])
        emb = self.proj(patches.to(self.proj[0].weight.dtype))  # (N, T, D)
        lengths = torch.tensor(features.valid_lengths or [t] * wav.shape[0], device=emb.device)
        mask = torch.arange(t, device=emb.device)[None] < lengths[:, None]
        return MediaEmbeddings(emb, mask)


@hookimpl
def register_encoders(register) -> None:
    """Announce the encoder to the Lyra plugin host."""
    register("logmel-patch", LogMelPatchEncoder)
