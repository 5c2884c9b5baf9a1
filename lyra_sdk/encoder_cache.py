"""Memoised outputs of frozen encoders, per media file, bounded in bytes.

Training a projector or LoRA over a frozen encoder re-encodes every clip once per epoch, and for Whisper that
is most of a CPU step (a full 30 s window per clip). :class:`EncoderCache` keeps each file's encoder rows
(before the projector, so trained projectors still see fresh inputs) and drops the least recently used
entries past ``max_bytes``. Keys include the file's size and modification time, so an edited file is encoded
again. :meth:`lyra_sdk.Lyra.encode_media` uses it only while the encoder has no trainable parameters.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

CacheKey = tuple[str, str, int, int]


@dataclass(frozen=True)
class EncodedRow:
    """One encoder output row (a 30 s window, an image, ...): embeddings (T, D), mask (T,), optional grid."""

    embeddings: Tensor
    mask: Tensor
    grid: Tensor | None

    @property
    def nbytes(self) -> int:
        extra = self.grid.nbytes if self.grid is not None else 0
        return self.embeddings.nbytes + self.mask.nbytes + extra


class EncoderCache:
    """Least-recently-used map (modality, file) -> encoder rows, holding at most ``max_bytes`` of tensors."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._rows: OrderedDict[CacheKey, list[EncodedRow]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    @staticmethod
    def key(modality: str, item: Any) -> CacheKey | None:
        """The cache key of a media reference (a file path), or None for in-memory media."""
        if not isinstance(item, (str, os.PathLike)):
            return None
        path = Path(item).expanduser()
        try:
            st = path.stat()
        except OSError:
            return None
        return (modality, str(path.resolve()), st.st_size, st.st_mtime_ns)

    def get(self, key: CacheKey | None) -> list[EncodedRow] | None:
        """Cached rows of ``key`` (marking it recently used), or None."""
        rows = self._rows.get(key) if key is not None else None
        if rows is None:
            self.misses += 1
            return None
        self._rows.move_to_end(key)
        self.hits += 1
        return rows

    def put(self, key: CacheKey | None, rows: list[EncodedRow]) -> None:
        """Store detached copies of ``rows`` and evict the oldest entries beyond the byte budget."""
        if key is None:
            return
        rows = [EncodedRow(r.embeddings.detach().clone(), r.mask.detach().clone(),
                           r.grid.detach().clone() if r.grid is not None else None) for r in rows]
        size = sum(r.nbytes for r in rows)
        if size > self.max_bytes:
            return
        old = self._rows.pop(key, None)
        if old is not None:
            self.nbytes -= sum(r.nbytes for r in old)
        self._rows[key] = rows
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, dropped = self._rows.popitem(last=False)
            self.nbytes -= sum(r.nbytes for r in dropped)

    def clear(self) -> None:
        """Forget everything."""
        self._rows.clear()
        self.nbytes = 0
