"""Memoised outputs of frozen encoders, per media file, bounded in bytes.

Training a projector or LoRA over a frozen encoder re-encodes every clip once per epoch, and for Whisper that
is most of a CPU step (a full 30 s window per clip). :class:`EncoderCache` keeps each file's encoder rows
(before the projector, so trained projectors still see fresh inputs) and drops the least recently used
entries past ``max_bytes``. Keys include the file's size and modification time, so an edited file is encoded
again. :meth:`lyra_sdk.Lyra.encode_media` uses it while the encoder has no trainable parameters, and for an
encoder with ``trainable: top`` it keeps the frozen stem's hidden states (``top`` = the trained blocks), so only
the trained last blocks run each step.

With a ``directory`` the rows are also written there (one safetensors file per media file and encoder), so
later runs (the next training stage, a rerun) skip the encoder from their first epoch. A disk entry's name
hashes the memory key together with a fingerprint of the encoder's weights (every parameter and buffer), so a
different or retrained encoder never reads another's outputs (for a stem: the weights outside the trained
top blocks, and the split point); unreadable entries count as misses and are
rewritten; writes go to a temporary file renamed into place.

Cached rows are reused as they were encoded. That is exact for encoders that treat each item on its own
(Whisper pads every clip to its 30 s window); an encoder that pads a batch to its longest item gives a clip
slightly different boundary frames in another batch, and the cache keeps the first ones.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

log = logging.getLogger(__name__)

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
    """Least-recently-used map (modality, file) -> encoder rows, holding at most ``max_bytes`` of tensors in
    memory, optionally backed by ``directory`` on disk (then ``max_bytes`` may be 0: disk only)."""

    def __init__(self, max_bytes: int, directory: str | os.PathLike | None = None) -> None:
        if max_bytes < 0 or (max_bytes == 0 and directory is None):
            raise ValueError("max_bytes must be positive (or 0 with a directory)")
        self.max_bytes = max_bytes
        self.directory = Path(directory).expanduser() if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.nbytes = 0
        self.hits = 0
        self.disk_hits = 0
        self.misses = 0
        self._rows: OrderedDict[CacheKey, list[EncodedRow]] = OrderedDict()
        self._fingerprints: weakref.WeakKeyDictionary[nn.Module, dict[int | None, str]] = weakref.WeakKeyDictionary()

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

    def fingerprint(self, encoder: nn.Module, top: int | None = None) -> str:
        """A hash of the encoder's parameters and buffers (names, shapes, dtypes, values); memoised per module.

        With ``top`` (the blocks ``trainable: top`` trains) it covers the frozen stem only: every tensor outside
        ``encoder.top_modules(top)``, plus the split point, so the stem's rows stay valid while the top trains.
        The encoder's :meth:`~lyra_sdk.interfaces.Encoder.cache_signature` (output-changing options) is included.
        """
        memo = self._fingerprints.setdefault(encoder, {})
        fp = memo.get(top)
        if fp is None:
            skip = {id(p) for m in encoder.top_modules(top) for p in m.parameters()} if top is not None else set()
            h = hashlib.sha256(f"stem:{top}".encode() if top is not None else b"")
            signature = encoder.cache_signature(top) if hasattr(encoder, "cache_signature") else ""
            if signature:  # options that change the rows (e.g. Whisper's crop_from_layer)
                h.update(f"options:{signature}".encode())
            for name, t in list(encoder.named_parameters()) + list(encoder.named_buffers()):
                if id(t) in skip:
                    continue
                h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
                h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            fp = memo[top] = h.hexdigest()
        return fp

    def get(self, key: CacheKey | None, encoder: nn.Module | None = None,
            top: int | None = None) -> list[EncodedRow] | None:
        """Cached rows of ``key`` (marking it recently used), from memory or, given the ``encoder``, from disk;
        ``top``: the rows are the stem below that many trained blocks (see :meth:`fingerprint`)."""
        key = self._tagged(key, top)
        rows = self._rows.get(key) if key is not None else None
        if rows is not None:
            self._rows.move_to_end(key)
            self.hits += 1
            return rows
        rows = self._read(key, encoder, top) if key is not None else None
        if rows is None:
            self.misses += 1
            return None
        self.disk_hits += 1
        self._remember(key, rows)
        return rows

    def put(self, key: CacheKey | None, rows: list[EncodedRow], encoder: nn.Module | None = None,
            top: int | None = None) -> None:
        """Store detached copies of ``rows`` (and, given the ``encoder``, write them to disk); evict the oldest
        memory entries beyond the byte budget. ``top`` as in :meth:`get`."""
        key = self._tagged(key, top)
        if key is None:
            return
        rows = [EncodedRow(r.embeddings.detach().clone(), r.mask.detach().clone(),
                           r.grid.detach().clone() if r.grid is not None else None) for r in rows]
        self._write(key, rows, encoder, top)
        self._remember(key, rows)

    def _remember(self, key: CacheKey, rows: list[EncodedRow]) -> None:
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

    @staticmethod
    def _tagged(key: CacheKey | None, top: int | None) -> CacheKey | None:
        """Memory key: a stem's rows never answer for the whole encoder's (or another split's)."""
        if key is None or top is None:
            return key
        return (f"{key[0]}@stem{top}", *key[1:])  # type: ignore[return-value]

    def _file(self, key: CacheKey, encoder: nn.Module | None, top: int | None = None) -> Path | None:
        if self.directory is None or encoder is None:
            return None
        name = hashlib.sha256(repr((key, self.fingerprint(encoder, top))).encode()).hexdigest()
        return self.directory / f"{name}.safetensors"

    def _read(self, key: CacheKey, encoder: nn.Module | None, top: int | None) -> list[EncodedRow] | None:
        file = self._file(key, encoder, top)
        if file is None or not file.is_file():
            return None
        try:
            t = load_file(str(file))
            rows = [EncodedRow(t[f"{i}.embeddings"], t[f"{i}.mask"], t.get(f"{i}.grid"))
                    for i in range(int(t["n_rows"].item()))]
        except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as exc:
            log.warning("encoder cache: ignoring unreadable %s (%s)", file, exc)
            return None
        return rows

    def _write(self, key: CacheKey, rows: list[EncodedRow], encoder: nn.Module | None, top: int | None) -> None:
        file = self._file(key, encoder, top)
        if file is None:
            return
        tensors = {"n_rows": torch.tensor(len(rows))}
        for i, r in enumerate(rows):
            tensors[f"{i}.embeddings"], tensors[f"{i}.mask"] = r.embeddings.contiguous(), r.mask.contiguous()
            if r.grid is not None:
                tensors[f"{i}.grid"] = r.grid.contiguous()
        fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp)
            os.replace(tmp, file)
        except OSError as exc:
            log.warning("encoder cache: could not write %s (%s)", file, exc)
            Path(tmp).unlink(missing_ok=True)

    def clear(self) -> None:
        """Forget everything."""
        self._rows.clear()
        self.nbytes = 0
