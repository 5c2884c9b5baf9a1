"""Speech output: a speech decoder (LLM hidden states -> discrete units) and a vocoder (units -> waveform)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

from torch import Tensor, nn

from .base import Configurable


class SpeechDecoder(Configurable, nn.Module, ABC):
    """Maps the LLM's last-layer hidden states at answer tokens to discrete speech units.

    ``unit_vocab_size`` units are numbered 0..unit_vocab_size-1; a CTC decoder adds a blank after them.
    """

    unit_vocab_size: int

    @abstractmethod
    def forward(self, hidden_states: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(B, L, D) hidden states, (B, L) bool mask -> unit logits (B, T, unit_vocab_size + 1) and mask (B, T)."""

    @abstractmethod
    def decode(self, hidden_states: Tensor, mask: Tensor) -> list[list[int]]:
        """Greedy decoding: one unit sequence per batch row."""

    @abstractmethod
    def loss(self, hidden_states: Tensor, mask: Tensor, targets: Sequence[Sequence[int]]) -> Tensor:
        """The training loss (a scalar) against target unit sequences."""

    def stream(self) -> "UnitStream":
        """An incremental decoder: feed hidden states as text tokens are generated, get new units back."""
        raise NotImplementedError(f"{type(self).__name__} does not stream")


class UnitStream(ABC):
    """Incremental unit decoding state returned by :meth:`SpeechDecoder.stream`."""

    @abstractmethod
    def push(self, hidden_states: Tensor) -> list[int]:
        """Feed (n, D) new hidden states; return the units that became final."""

    @abstractmethod
    def flush(self) -> list[int]:
        """End of input: return the remaining units."""


class Vocoder(Configurable, nn.Module, ABC):
    """Discrete units -> waveform at ``sample_rate`` Hz."""

    sample_rate: int
    num_units: int

    @abstractmethod
    def forward(self, units: Tensor, **kwargs: Any) -> Tensor:
        """(B, T) long units -> (B, S) float waveform."""

    def synthesize(self, units: Sequence[int], dur_prediction: bool = False) -> Tensor:
        """One unit sequence -> (S,) waveform."""
        raise NotImplementedError

    def stream(self, units: Iterator[Sequence[int]]) -> Iterator[Tensor]:
        """Vocode units as they arrive; yields (S_i,) waveform chunks."""
        raise NotImplementedError(f"{type(self).__name__} does not stream")
