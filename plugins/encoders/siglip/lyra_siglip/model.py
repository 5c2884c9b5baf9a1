"""SigLIP's vision transformer in plain torch, with exactly ``transformers``' ``SiglipVisionModel`` parameter names.

State-dict keys (below the model): ``embeddings.patch_embedding.{weight,bias}``,
``embeddings.position_embedding.weight``,
``encoder.layers.N.{layer_norm1,self_attn.{q,k,v,out}_proj,layer_norm2,mlp.fc1,mlp.fc2}.*`` and
``post_layernorm.*``. The attention-pooling ``head`` of SigLIP is not built: Lyra feeds patch tokens to the LLM.
Input: (B, 3, S, S) pixel values; output: the hidden states of the requested layer, (B, (S / patch) ** 2, hidden).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
}
"""The ``hidden_act`` values SigLIP checkpoints use (transformers' names)."""


@dataclass(frozen=True)
class SiglipVisionConfig:
    """The architecture of a SigLIP vision tower; names and defaults follow ``transformers.SiglipVisionConfig``."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 16
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                             f"({self.num_attention_heads})")
        if not 0 < self.patch_size <= self.image_size:
            raise ValueError(f"patch_size ({self.patch_size}) must be in [1, image_size ({self.image_size})]")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; valid: {', '.join(ACTIVATIONS)}")

    # HF config fields that do not change the vision tower's forward pass at inference
    IGNORED: ClassVar[tuple[str, ...]] = ("attention_dropout", "vision_use_head")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, strict: bool) -> "SiglipVisionConfig":
        """Build from HF config fields. ``strict``: unknown keys are an error (user input); otherwise they are
        dropped (a ``config.json`` also holds ``model_type``, ``dtype``, ...). Raises ValueError."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names - set(cls.IGNORED))
        if strict and unknown:
            valid = sorted(names | set(cls.IGNORED))
            raise ValueError(f"unknown SigLIP vision config field(s) {unknown}; valid: {valid}")
        for key in ("image_size", "patch_size"):
            value = data.get(key)
            if isinstance(value, (list, tuple)):
                if len(value) != 2 or value[0] != value[1]:
                    raise ValueError(f"{key} must be square, got {value}")
                data = {**data, key: value[0]}
        return cls(**{k: v for k, v in data.items() if k in names})

    def as_dict(self) -> dict[str, Any]:
        """Plain data (HF field names)."""
        return asdict(self)

    @property
    def grid(self) -> int:
        """Patches per side; a remainder is cropped by the strided conv (so400m: 384 px / 14 -> 27)."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patch tokens per image."""
        return self.grid ** 2


class SiglipEmbeddings(nn.Module):
    """Non-overlapping patches -> linear embedding (a strided conv) + one learned position per patch."""

    def __init__(self, config: SiglipVisionConfig) -> None:
        super().__init__()
        self.patch_embedding = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=config.patch_size,
                                         stride=config.patch_size)
        self.position_embedding = nn.Embedding(config.num_patches, config.hidden_size)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """(B, C, S, S) -> (B, P, D)."""
        x = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))  # (B, D, S/p, S/p)
        x = x.flatten(2).transpose(1, 2)  # (B, P, D), patches in row-major order
        return x + self.position_embedding.weight[None]


class SiglipAttention(nn.Module):
    """Bidirectional multi-head self-attention with biased q/k/v/out projections."""

    def __init__(self, config: SiglipVisionConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, L, D)."""
        b, n, d = x.shape
        heads = lambda t: t.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))  # (B, H, L, d_h)
        out = F.scaled_dot_product_attention(q, k, v, scale=(d // self.num_heads) ** -0.5)  # (B, H, L, d_h)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class SiglipMLP(nn.Module):
    """fc1 -> activation -> fc2."""

    def __init__(self, config: SiglipVisionConfig) -> None:
        super().__init__()
        self.act = ACTIVATIONS[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, L, D)."""
        return self.fc2(self.act(self.fc1(x)))


class SiglipEncoderLayer(nn.Module):
    """A pre-LayerNorm transformer block."""

    def __init__(self, config: SiglipVisionConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = SiglipAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SiglipMLP(config)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, L, D)."""
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    """The stack of blocks (named ``layers`` as in transformers)."""

    def __init__(self, config: SiglipVisionConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(config) for _ in range(config.num_hidden_layers))


class SiglipVisionTransformer(nn.Module):
    """Embeddings, encoder and ``post_layernorm``; returns one layer's hidden states."""

    def __init__(self, config: SiglipVisionConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = SiglipEmbeddings(config)
        self.encoder = SiglipEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def hidden_state_index(self, select_layer: int) -> int:
        """``select_layer`` as an index into transformers' ``hidden_states`` (0 = embeddings) -> 0..num_layers."""
        n = self.config.num_hidden_layers
        index = select_layer if select_layer >= 0 else n + 1 + select_layer
        if not 0 <= index <= n:
            raise ValueError(f"select_layer must be in [{-(n + 1)}, {n}] for {n} layers, got {select_layer}")
        return index

    def forward(self, pixel_values: Tensor, select_layer: int = -1, post_layernorm: bool = True) -> Tensor:
        """(B, C, S, S) -> (B, P, D): ``hidden_states[select_layer]``, then ``post_layernorm`` when asked.

        With the defaults this equals transformers' ``last_hidden_state``. Layers after the selected one are
        not run.
        """
        stop = self.hidden_state_index(select_layer)
        x = self.embeddings(pixel_values)  # (B, P, D)
        for layer in self.encoder.layers[:stop]:
            x = layer(x)
        return self.post_layernorm(x) if post_layernorm else x


__all__ = ["ACTIVATIONS", "SiglipVisionConfig", "SiglipVisionTransformer"]
