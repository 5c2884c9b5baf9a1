"""Encoders (raw media -> features -> embeddings) and projectors (encoder width -> LLM width)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .base import Configurable, Modality


@dataclass
class Features:
    """An encoder's input batch, made by :meth:`Encoder.featurize`.

    ``tensors`` is encoder specific (e.g. ``input_features`` (N, n_mels, 3000) for Whisper).
    ``row_item[n]`` is the index of the media item that output row ``n`` belongs to: one item may span
    several rows (a long recording split into 30 s windows), and the rows of one item are concatenated,
    in order, after projection.
    ``valid_lengths[n]`` is the number of valid output frames (before projection) in row ``n``.
    """

    tensors: dict[str, Tensor]
    row_item: list[int]
    valid_lengths: list[int] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Features":
        """Move every tensor to ``device``; floating tensors are also cast to ``dtype`` when given."""
        moved = {}
        for k, v in self.tensors.items():
            v = v.to(device)
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
            moved[k] = v
        return Features(moved, list(self.row_item), self.valid_lengths, dict(self.extras))


@dataclass
class MediaEmbeddings:
    """Rows of embeddings with a validity mask.

    ``embeddings``: (N, T, D); ``mask``: (N, T) bool, True where a token is real.
    ``grids``: optional (N, 3) long tensor of (t, h, w) token grids per row, used by M-RoPE LLMs.
    """

    embeddings: Tensor
    mask: Tensor
    grids: Tensor | None = None


class Encoder(Configurable, nn.Module, ABC):
    """A media encoder.

    ``modalities`` lists the media it can encode; ``output_dim`` is the width of its embeddings.
    ``featurize`` turns raw media (16 kHz mono float32 numpy arrays for audio, PIL images for images,
    :class:`~lyra_sdk.media.video.VideoClip` for video) into :class:`Features`; ``forward`` turns features
    into :class:`MediaEmbeddings`.
    """

    modalities: ClassVar[frozenset[Modality]] = frozenset()
    window_seconds: ClassVar[float | None] = None
    """Length of the fixed windows long audio is split into (30 for Whisper); None if not windowed."""
    output_dim: int

    @abstractmethod
    def featurize(self, media: Sequence[Any]) -> Features:
        """Raw media items -> one batch of features (CPU tensors)."""

    def featurize_batches(self, media: Sequence[Any]) -> Iterator[Features]:
        """Like :meth:`featurize`, in bounded pieces, so hours of audio never sit in memory as features at once.

        Each piece's ``row_item`` indexes ``media``; rows of one item come in order across pieces. The default
        yields a single piece.
        """
        yield self.featurize(media)

    @abstractmethod
    def forward(self, features: Features) -> MediaEmbeddings:
        """Features -> embeddings (N, T, output_dim) with mask (N, T)."""

    # ``trainable: top`` (optional): train the last blocks, keep (and cache) the rest frozen.

    def top_modules(self, n: int) -> list[nn.Module] | None:
        """The modules ``trainable: top`` trains: the last ``n`` blocks and what follows them (a final norm).

        None (the default) means this encoder cannot be split. Encoders that can also implement
        :meth:`forward_stem` and :meth:`forward_top`; raise ``ValueError`` when ``n`` exceeds the blocks.
        """
        return None

    def forward_stem(self, features: Features, n: int) -> MediaEmbeddings:
        """Features -> the hidden states entering the last ``n`` blocks (the frozen part of ``trainable: top``)."""
        raise NotImplementedError(f"{type(self).__name__} has no stem/top split")

    def forward_top(self, hidden: MediaEmbeddings, n: int) -> MediaEmbeddings:
        """Hidden states from :meth:`forward_stem` -> this encoder's output:
        ``forward_top(forward_stem(f, n), n)`` equals ``forward(f)``."""
        raise NotImplementedError(f"{type(self).__name__} has no stem/top split")

    def cache_signature(self, top: int | None) -> str:
        """Options (not weights) that change what :meth:`forward` returns, or :meth:`forward_stem` for ``top``.

        It is part of the :class:`~lyra_sdk.encoder_cache.EncoderCache` fingerprint, so rows computed under other
        settings are never served. The default (no such options) is the empty string.
        """
        return ""


class Projector(Configurable, nn.Module, ABC):
    """Maps encoder embeddings to the LLM's width. ``forward`` may change the number of tokens per row."""

    in_dim: int
    out_dim: int

    @abstractmethod
    def forward(self, x: MediaEmbeddings) -> MediaEmbeddings:
        """(N, T, in_dim) -> (N, T', out_dim); the mask and grids are carried along."""
