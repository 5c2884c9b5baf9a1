"""Fusion: token segments + media embeddings -> one padded batch of LLM input embeddings.

This is the single mechanism every modality goes through: text ids are embedded by the LLM, media slots are
filled, in order, with that item's projected embeddings, and the batch is padded (left for generation, right
for training) with an attention mask, labels and a record of where each medium landed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import PromptError
from .interfaces import MediaSpan, Modality
from .prompt import Segment

IGNORE_INDEX = -100
MODALITY_IDS = {m: i + 1 for i, m in enumerate(Modality)}
"""Values of :attr:`FusedBatch.modality_ids`: 0 is text."""


@dataclass
class FusedBatch:
    """LLM-ready inputs.

    ``inputs_embeds`` (B, L, D); ``attention_mask`` (B, L) long, 1 = real; ``input_ids`` (B, L) with the pad id
    at media and padding positions; ``modality_ids`` (B, L) (0 text, see :data:`MODALITY_IDS`); ``labels`` (B, L)
    with -100 where no loss applies; ``spans[b]`` lists sample b's media in order. ``raw_speech[b]``, set when
    the model compresses speech (``speech_compression``), holds sample b's speech tokens before compression
    (all its clips, in order), which training losses such as ASR-CTC read. ``heard[b]``, set when asked for
    (``Lyra.prepare(..., heard=True)``) and the model compresses speech, holds the word-piece ids sample b's speech was heard as (all its clips, in order): the
    pieces the LM-fused beam chose, or the greedy CTC read-out where compression was greedy; None for a sample
    without speech.
    """

    inputs_embeds: Tensor
    attention_mask: Tensor
    input_ids: Tensor
    modality_ids: Tensor
    labels: Tensor
    spans: list[list[MediaSpan]]
    raw_speech: list[Tensor] | None = None
    heard: list[list[int] | None] | None = None

    @property
    def media_mask(self) -> Tensor:
        """(B, L) bool: True at media tokens."""
        return self.modality_ids > 0


MediaItem = tuple[Tensor, Tensor | None]
"""One media item's projected embeddings (n, D) and optional (t, h, w) grid."""


def fuse(
    segments: Sequence[Sequence[Segment]],
    media: Sequence[dict[Modality, list[MediaItem]]],
    embed_tokens: Callable[[Tensor], Tensor],
    pad_id: int,
    padding_side: str = "left",
    device: torch.device | str = "cpu",
) -> FusedBatch:
    """Build a :class:`FusedBatch` from per-sample segments and per-sample media embeddings."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    rows: list[tuple[list[int], list[int], list[bool], list[tuple[int, int, Modality, Tensor | None]]]] = []
    pieces: list[list[Tensor]] = []
    for b, segs in enumerate(segments):
        ids: list[int] = []
        mod: list[int] = []
        train: list[bool] = []
        spans: list[tuple[int, int, Modality, Tensor | None]] = []
        chunks: list[Tensor] = []
        for seg in segs:
            if seg.modality is None:
                ids += seg.ids
                mod += [0] * len(seg.ids)
                train += [seg.train] * len(seg.ids)
                continue
            try:
                emb, grid = media[b][seg.modality][seg.index]
            except (KeyError, IndexError):
                raise PromptError(f"sample {b}: no embeddings for {seg.modality.placeholder} number {seg.index + 1}") from None
            n = emb.shape[0]
            spans.append((len(ids), n, seg.modality, grid))
            chunks.append(emb)
            ids += [pad_id] * n
            mod += [MODALITY_IDS[seg.modality]] * n
            train += [False] * n
        rows.append((ids, mod, train, spans))
        pieces.append(chunks)

    bsz, length = len(rows), max(len(r[0]) for r in rows)
    input_ids = torch.full((bsz, length), pad_id, dtype=torch.long)
    modality_ids = torch.zeros((bsz, length), dtype=torch.long)
    attention = torch.zeros((bsz, length), dtype=torch.long)
    labels = torch.full((bsz, length), IGNORE_INDEX, dtype=torch.long)
    all_spans: list[list[MediaSpan]] = []
    for b, (ids, mod, train, spans) in enumerate(rows):
        off = length - len(ids) if padding_side == "left" else 0
        sl = slice(off, off + len(ids))
        input_ids[b, sl] = torch.tensor(ids, dtype=torch.long)
        modality_ids[b, sl] = torch.tensor(mod, dtype=torch.long)
        attention[b, sl] = 1
        t = torch.tensor(train, dtype=torch.bool)
        labels[b, sl] = torch.where(t, torch.tensor(ids, dtype=torch.long), IGNORE_INDEX)
        all_spans.append([MediaSpan(m, off + s, n, g) for s, n, m, g in spans])

    input_ids = input_ids.to(device)
    embeds = embed_tokens(input_ids)  # (B, L, D)
    flat = [c for chunks in pieces for c in chunks]
    if flat:
        media_vals = torch.cat(flat, dim=0).to(embeds.dtype)  # (N_media_tokens, D), in row-major position order
        mask = (modality_ids > 0).to(embeds.device)
        embeds = embeds.masked_scatter(mask.unsqueeze(-1), media_vals)
    dev = embeds.device
    return FusedBatch(embeds, attention.to(dev), input_ids, modality_ids.to(dev), labels.to(dev), all_spans)
