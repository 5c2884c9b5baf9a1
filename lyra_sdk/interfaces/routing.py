"""LoRA routing (which adapter serves an input) and latent extraction (which media tokens to keep)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor

from .base import Configurable, Modality


@dataclass
class RoutingInput:
    """What a router sees of one sample: media counts by modality and the number of speech windows."""

    media_counts: Mapping[Modality, int] = field(default_factory=dict)
    speech_chunks: int = 0


class LoraRouter(Configurable, ABC):
    """Chooses the LoRA route (adapter + its projector weights) for a sample; ``None`` = adapters off."""

    @abstractmethod
    def route(self, sample: RoutingInput) -> str | None:
        """The route name for this sample, or None for the plain base model."""


class LatentExtractor(Configurable, ABC):
    """Chooses which media tokens survive inside the LLM forward (LMME)."""

    gap: int

    @abstractmethod
    def select(self, scores: Tensor, media_mask: Tensor) -> Tensor:
        """``scores`` (B, L) attention each token receives, ``media_mask`` (B, L) bool -> keep mask (B, L) bool.

        Non-media tokens are always kept.
        """
