"""ImageBind's audio branch in plain torch, with the module names of ``imagebind_huge.pth`` (below ``*.audio.``).

Structure (ImageBind ``imagebind_model.py``; shapes for ``imagebind_huge``):

* ``preprocessor`` (``modality_preprocessors.audio``): ``rgbt_stem.proj`` Conv2d(1, D, k=16, s=10, no bias) over
  the (1, 128, 204) spectrogram -> 12 x 19 = 228 patches, ``rgbt_stem.norm_layer`` LayerNorm(D) (eps 1e-5),
  ``cls_token`` (1, 1, D) prepended, ``pos_embedding_helper.pos_embed`` (1, 229, D) added.
* ``trunk`` (``modality_trunks.audio``): ``blocks.N`` pre-LN blocks: ``norm_1`` -> ``attn`` (an
  ``nn.MultiheadAttention`` with ``add_bias_kv``: ``in_proj_weight/bias``, ``bias_k``, ``bias_v``,
  ``out_proj``) -> residual, ``norm_2`` -> ``mlp.fc1`` -> GELU -> ``mlp.fc2`` -> residual (LayerNorms eps 1e-6).
  The audio trunk's ``pre_transformer_layer`` has no LayerNorm (only a layout change) and its
  ``post_transformer_layer`` is only a layout change, so neither has weights. Drop path is off at inference.
* ``head`` (``modality_heads.audio``): ``0`` LayerNorm(D, eps 1e-6), ``1`` select the cls token,
  ``2`` Linear(D, 1024, no bias).
* ``postprocessor`` (``modality_postprocessors.audio``): ``0`` L2 normalisation, ``1`` fixed logit scaling:
  ``clip(exp(log_logit_scale), max=100) * x`` with the buffer ``log_logit_scale`` = ln 20.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ImageBindAudioConfig:
    """The architecture of ImageBind's audio branch (defaults: ``imagebind_huge``)."""

    embed_dim: int = 768
    num_blocks: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    out_embed_dim: int = 1024
    num_mel_bins: int = 128
    target_length: int = 204
    kernel_size: int = 16
    stride: int = 10
    logit_scale: float = 20.0

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        if min(self.num_mel_bins, self.target_length) < self.kernel_size:
            raise ValueError(f"the spectrogram ({self.num_mel_bins} x {self.target_length}) is smaller than the "
                             f"patch kernel ({self.kernel_size})")

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(mel, time) patches of one clip: (12, 19) for 128 x 204 with kernel 16, stride 10."""
        k, s = self.kernel_size, self.stride
        return (self.num_mel_bins - k) // s + 1, (self.target_length - k) // s + 1

    @property
    def num_tokens(self) -> int:
        """Tokens per clip in the trunk: cls + patches (229 for imagebind_huge)."""
        h, w = self.patch_grid
        return 1 + h * w

    def as_dict(self) -> dict[str, int | float]:
        """Plain data."""
        return asdict(self)


class PatchStem(nn.Module):
    """``rgbt_stem``: strided conv patches, flattened mel-major, then LayerNorm."""

    def __init__(self, c: ImageBindAudioConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, c.embed_dim, kernel_size=c.kernel_size, stride=c.stride, bias=False)
        self.norm_layer = nn.LayerNorm(c.embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 1, M, T) -> (B, P, D)."""
        return self.norm_layer(self.proj(x).flatten(2).transpose(1, 2))


class PosEmbedding(nn.Module):
    """``pos_embedding_helper``: one learned position per token (cls first)."""

    def __init__(self, c: ImageBindAudioConfig) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, c.num_tokens, c.embed_dim))


class AudioPreprocessor(nn.Module):
    """Spectrogram -> tokens: patches, cls token, positions."""

    def __init__(self, c: ImageBindAudioConfig) -> None:
        super().__init__()
        self.rgbt_stem = PatchStem(c)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.pos_embedding_helper = PosEmbedding(c)
        with torch.no_grad():  # OpenCLIP-style init, as ImageBind (checkpoints overwrite it)
            nn.init.normal_(self.cls_token, std=c.embed_dim ** -0.5)
            nn.init.normal_(self.pos_embedding_helper.pos_embed, std=c.embed_dim ** -0.5)

    def forward(self, fbank: Tensor) -> Tensor:
        """(B, 1, M, T) -> (B, 1 + P, D)."""
        patches = self.rgbt_stem(fbank)  # (B, P, D)
        tokens = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
        return tokens + self.pos_embedding_helper.pos_embed


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, c: ImageBindAudioConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(c.embed_dim, c.mlp_dim)
        self.fc2 = nn.Linear(c.mlp_dim, c.embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, L, D)."""
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """A pre-LN transformer block; attention keys get one extra learned key/value (``bias_k``/``bias_v``)."""

    def __init__(self, c: ImageBindAudioConfig) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(c.embed_dim, c.num_heads, bias=True, add_bias_kv=True, batch_first=True)
        self.norm_1 = nn.LayerNorm(c.embed_dim, eps=1e-6)
        self.mlp = Mlp(c)
        self.norm_2 = nn.LayerNorm(c.embed_dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, L, D)."""
        h = self.norm_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm_2(x))


class Trunk(nn.Module):
    """The block stack (``blocks.N``)."""

    def __init__(self, c: ImageBindAudioConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.num_blocks))

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, L, D)."""
        for block in self.blocks:
            x = block(x)
        return x


class SelectCls(nn.Module):
    """Token 0 of each sequence."""

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, D)."""
        return x[:, 0]


class L2Normalize(nn.Module):
    """Unit L2 norm along the last axis."""

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D)."""
        return F.normalize(x, dim=-1, p=2)


class FixedLogitScale(nn.Module):
    """Multiply by ``min(exp(log_logit_scale), 100)``; the log scale is a (non-trainable) buffer."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.register_buffer("log_logit_scale", torch.tensor(math.log(scale)))

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D)."""
        return torch.clip(self.log_logit_scale.exp(), max=100.0) * x


class ImageBindAudio(nn.Module):
    """The audio branch: ``tokens`` (trunk output per token) and ``embed`` (ImageBind's per-clip embedding)."""

    def __init__(self, config: ImageBindAudioConfig) -> None:
        super().__init__()
        self.config = config
        self.preprocessor = AudioPreprocessor(config)
        self.trunk = Trunk(config)
        self.head = nn.Sequential(nn.LayerNorm(config.embed_dim, eps=1e-6), SelectCls(),
                                  nn.Linear(config.embed_dim, config.out_embed_dim, bias=False))
        self.postprocessor = nn.Sequential(L2Normalize(), FixedLogitScale(config.logit_scale))

    def tokens(self, fbank: Tensor) -> Tensor:
        """(B, 1, M, T) normalised spectrograms -> trunk output (B, 1 + P, D), cls token first."""
        return self.trunk(self.preprocessor(fbank))

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """Trunk output (B, 1 + P, D) -> ImageBind's audio embedding (B, out_embed_dim): head + postprocessor."""
        return self.postprocessor(self.head(tokens))

    def forward(self, fbank: Tensor) -> Tensor:
        """(B, 1, M, T) -> (B, out_embed_dim), the embedding of each clip (ImageBind averages clips afterwards)."""
        return self.embed_tokens(self.tokens(fbank))


__all__ = ["ImageBindAudio", "ImageBindAudioConfig"]
