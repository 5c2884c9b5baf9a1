"""The Whisper audio encoder in plain torch, with exactly ``transformers``' ``WhisperEncoder`` parameter names.

An HF ``WhisperEncoder`` state dict (``conv1.*``, ``conv2.*``, ``embed_positions.weight``,
``layers.N.self_attn.{q,k,v,out}_proj.*``, ``layers.N.{self_attn_layer_norm,fc1,fc2,final_layer_norm}.*``,
``layer_norm.*``) loads into :class:`WhisperEncoderModel` with ``strict=True``. Input: (B, n_mels, 2 * T) log-mel
features; output: (B, T, d_model), T = 1500 for a 30 s window.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class WhisperEncoderConfig:
    """The architecture of a Whisper encoder (names follow ``transformers.WhisperConfig``)."""

    num_mel_bins: int = 80
    d_model: int = 384
    encoder_layers: int = 4
    encoder_attention_heads: int = 6
    encoder_ffn_dim: int = 1536
    max_source_positions: int = 1500

    def __post_init__(self) -> None:
        if self.d_model % self.encoder_attention_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by encoder_attention_heads "
                             f"({self.encoder_attention_heads})")
        if self.d_model % 2:
            raise ValueError(f"d_model must be even for sinusoidal positions, got {self.d_model}")

    def as_dict(self) -> dict[str, int]:
        """Plain data, e.g. for plugin options."""
        return asdict(self)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's fixed sinusoidal positions, (length, channels): sines in the first half, cosines in the second."""
    log_timescale_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_timescale_increment * torch.arange(channels // 2, dtype=torch.float32))
    scaled_time = torch.arange(length, dtype=torch.float32)[:, None] * inv_timescales[None, :]  # (L, C/2)
    return torch.cat([scaled_time.sin(), scaled_time.cos()], dim=1)


class WhisperSelfAttention(nn.Module):
    """Multi-head self-attention; ``k_proj`` has no bias (a key bias cannot change a softmax over keys)."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, D); every frame attends to every frame of its window."""
        b, t, d = x.shape
        heads = lambda y: y.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)  # (B, H, T, Dh)
        out = F.scaled_dot_product_attention(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)))
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class WhisperEncoderLayer(nn.Module):
    """A pre-LayerNorm transformer block: x + attn(LN(x)), then x + fc2(gelu(fc1(LN(x))))."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = WhisperSelfAttention(d_model, num_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.final_layer_norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, D)."""
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        x = x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
        if x.dtype == torch.float16:  # as Whisper does: keep fp16 activations finite
            limit = torch.finfo(x.dtype).max - 1000
            x = x.clamp(-limit, limit)
        return x


class WhisperEncoderModel(nn.Module):
    """Two GELU convolutions (the second with stride 2), positions, pre-LN layers and a final LayerNorm."""

    def __init__(self, config: WhisperEncoderConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.conv1 = nn.Conv1d(config.num_mel_bins, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(config.max_source_positions, d)
        with torch.no_grad():
            self.embed_positions.weight.copy_(sinusoids(config.max_source_positions, d))
        self.embed_positions.requires_grad_(False)  # fixed, as in Whisper
        self.layers = nn.ModuleList(
            WhisperEncoderLayer(d, config.encoder_attention_heads, config.encoder_ffn_dim)
            for _ in range(config.encoder_layers)
        )
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, input_features: Tensor, lengths: Tensor | None = None, crop_from: int | None = None) -> Tensor:
        """(B, n_mels, 2T) log-mel -> (B, T, d_model); T may not exceed ``max_source_positions``.

        With ``crop_from`` (and ``lengths``, the valid frames of each row), layers ``crop_from`` onwards run on
        each row's first ``lengths[b]`` frames only (the window's padding is neither attended to nor updated).
        """
        return self.top(self.stem(input_features, 0, lengths, crop_from), 0, lengths, crop_from)

    def stem(self, input_features: Tensor, n_top: int, lengths: Tensor | None = None,
             crop_from: int | None = None) -> Tensor:
        """(B, n_mels, 2T) log-mel -> (B, T, d_model) hidden states entering the last ``n_top`` layers."""
        if input_features.dim() != 3 or input_features.shape[1] != self.config.num_mel_bins:
            raise ValueError(f"expected input_features of shape (batch, {self.config.num_mel_bins}, frames), "
                             f"got {tuple(input_features.shape)}")
        x = F.gelu(self.conv1(input_features))  # (B, D, 2T)
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, T, D)
        if x.shape[1] > self.config.max_source_positions:
            raise ValueError(f"at most {2 * self.config.max_source_positions} mel frames fit, "
                             f"got {input_features.shape[-1]}")
        x = x + self.embed_positions.weight[: x.shape[1]]
        return self._layers(x, 0, len(self.layers) - n_top, lengths, crop_from)

    def top(self, hidden: Tensor, n_top: int, lengths: Tensor | None = None, crop_from: int | None = None) -> Tensor:
        """(B, T, d_model) hidden states from :meth:`stem` -> the last ``n_top`` layers and the final LayerNorm."""
        return self.layer_norm(self._layers(hidden, len(self.layers) - n_top, len(self.layers), lengths, crop_from))

    def _layers(self, x: Tensor, start: int, stop: int, lengths: Tensor | None, crop_from: int | None) -> Tensor:
        """Layers ``start``..``stop - 1``; from ``crop_from`` on, row by row over each row's valid frames."""
        if crop_from is None or lengths is None or x.is_meta:  # meta (shape-only) runs: same shapes uncropped
            cut = stop
        else:
            cut = min(max(crop_from, start), stop)
        for layer in self.layers[start:cut]:
            x = layer(x)
        if cut == stop:
            return x
        rows = []
        for b in range(x.shape[0]):
            n = int(lengths[b])
            row = x[b : b + 1, :n]
            for layer in self.layers[cut:stop] if n else ():
                row = layer(row)
            rows.append(torch.cat([row, x[b : b + 1, n:]], dim=1))  # padding frames pass through unchanged
        return torch.cat(rows) if rows else x
