"""The LLM backbone interface: token embeddings, a forward on input embeddings with a KV cache, a tokenizer
and a chat template."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .base import Configurable, Modality


@runtime_checkable
class Tokenizer(Protocol):
    """What the core needs of a tokenizer."""

    eos_token_ids: list[int]
    pad_token_id: int

    def encode(self, text: str) -> list[int]:
        """Text -> ids, without adding any special token (special-token text such as ``<|im_end|>`` maps to its id)."""

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Ids -> text."""


@dataclass
class ChatMessage:
    """One chat turn: ``role`` is ``system``, ``user`` or ``assistant``; ``content`` may hold placeholders."""

    role: str
    content: str


@dataclass
class MediaSpan:
    """Where one media item landed in a fused sequence.

    ``start`` and ``length`` index the padded sequence; ``grid`` is the item's (t, h, w) *LLM token* grid
    (after any patch merging, so t * h * w == length) for M-RoPE backbones, or None for 1-D media (speech).
    """

    modality: Modality
    start: int
    length: int
    grid: Tensor | None = None


@dataclass
class LLMOutput:
    """Result of :meth:`LLMBackbone.forward`.

    ``logits``: (B, L', V) for the last ``logits_to_keep`` positions (all when 0), or None if not asked for;
    ``hidden_states``: (B, L, D) after the final norm; ``past_key_values``: the cache, when ``use_cache``.
    """

    logits: Tensor | None
    hidden_states: Tensor
    past_key_values: Any | None = None


class LLMBackbone(Configurable, nn.Module, ABC):
    """A decoder-only language model driven by input embeddings.

    ``media_wrappers`` maps a modality to the text placed before and after its placeholder when a prompt is
    built (Qwen2-VL wraps images in ``<|vision_start|>`` / ``<|vision_end|>``).
    """

    media_wrappers: ClassVar[dict[Modality, tuple[str, str]]] = {}
    max_context: int | None = None  # longest sequence (prompt + answer) the model handles; None = not known
    hidden_size: int
    vocab_size: int
    tokenizer: Tokenizer

    @abstractmethod
    def embed_tokens(self, input_ids: Tensor) -> Tensor:
        """(B, L) long -> (B, L, hidden_size)."""

    def input_embeddings(self) -> Tensor:
        """The (vocab_size, hidden_size) input-embedding table, one row per token id (LCMR over the vocabulary
        reads it). The default embeds every id; backbones holding an embedding matrix return it without a copy."""
        return self.embed_tokens(torch.arange(self.vocab_size, device=self.device)[None])[0]

    @abstractmethod
    def forward(
        self,
        inputs_embeds: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor | None = None,
        past_key_values: Any | None = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
        return_logits: bool = True,
    ) -> LLMOutput:
        """Run the decoder on ``inputs_embeds`` (B, L, D).

        ``attention_mask`` (B, L_past + L) is 1 for real tokens; ``position_ids`` is (B, L), or (3, B, L)
        for M-RoPE models; ``logits_to_keep`` = k > 0 computes logits for the last k positions only;
        ``return_logits=False`` skips the LM head (training computes logits only where labels are).
        """

    @abstractmethod
    def logits(self, hidden_states: Tensor) -> Tensor:
        """The LM head: (..., D) final hidden states -> (..., V) logits."""

    @abstractmethod
    def format_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        """Render a conversation with the model's chat template (placeholders are kept as text)."""

    def position_ids(self, attention_mask: Tensor, spans: Sequence[Sequence[MediaSpan]] | None = None) -> Tensor:
        """Positions (B, L) for a left- or right-padded batch: 1-D positions counting real tokens only.

        ``spans[b]`` lists sample b's media. M-RoPE models override this to return (3, B, L) positions in which
        media with a grid get (t, h, w) positions and everything else the same value on all three axes.
        """
        pos = attention_mask.long().cumsum(-1) - 1
        return pos.clamp(min=0)

    def next_position_ids(self, position_ids: Tensor) -> Tensor:
        """Positions of the token following each sequence: the largest position so far (over all M-RoPE axes) plus one.

        (B, L) -> (B, 1); (3, B, L) -> (3, B, 1) with the same value on every axis.
        """
        nxt = position_ids.amax(dim=-1, keepdim=True) + 1
        if nxt.ndim == 3:
            nxt = nxt.amax(dim=0, keepdim=True).expand_as(nxt)
        return nxt

    @property
    def device(self) -> torch.device:
        """Device of the embedding weights."""
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the weights."""
        return next(p.dtype for p in self.parameters() if p.is_floating_point())
