r"""CTC over the LLM's vocabulary: teach a speech projector which word piece each speech token says.

An SDK extension to Lyra's stage 1 (not in the paper). Each projected speech token :math:`x_l` scores every
entry :math:`e_v` of the LLM's input-embedding table and one blank,

.. math::

    z_{l,v} = x_l \cdot e_v / \tau \quad (v < V), \qquad z_{l,V} = b \ \text{(the blank, a constant;
    by default } b = \ln V + 4),

and the loss is the CTC negative log-likelihood of the transcript's token ids under
:math:`\operatorname{softmax}_v(z_l)`, summed over the batch and divided by its number of transcript tokens
(a per-word-piece cross-entropy; 0 when every speech token says its word piece or blank for sure).

Why: LCMR (``lcmr.py``) pulls speech tokens towards their aligned text tokens but must assign *every* speech
token to some word piece; speech at 10 tokens a second outnumbers text (about 3.5 word pieces a second), so
pauses and word transitions are forced onto neighbouring words. CTC has a blank for them. Like vocabulary
LCMR it needs no LLM forward (only the embedding table), so a projector over a frozen encoder trains with it
in a fraction of a CE step's time, and :func:`vocab_ctc_decode` reads out what the projector "says" without
running the LLM: a direct measure of word identity.

The blank is a constant score rather than a learned vector, so the loss adds no parameter. A speech token says
"blank" by scoring well below :math:`b` against every word piece; the default :math:`b = \ln V + 4` lets a
near-zero token do so (all V scores 0: the blank gets :math:`e^4 / (e^4 + 1) = 98\%`), whatever the geometry of
the table (a constant below the typical score could never win against V random directions). A blank token is
thus close to the zero vector, which a Llama-style LLM (RMS norm, no biases) reads as almost nothing, and a
word-piece token must score above :math:`b` for its own entry: it points along that entry's embedding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .lcmr import _pack

__all__ = ["VocabCTCInputError", "default_blank_logit", "vocab_ctc_decode", "vocab_ctc_logits", "vocab_ctc_loss"]


class VocabCTCInputError(ValueError):
    """Inputs of :func:`vocab_ctc_loss` / :func:`vocab_ctc_decode` that do not fit (shapes, dtypes, ids)."""


def default_blank_logit(vocab_size: int) -> float:
    """The blank's default score, ln V + 4 (see the module docstring)."""
    return math.log(vocab_size) + 4.0


def vocab_ctc_logits(speech_tokens: Tensor, vocab_embeds: Tensor, temperature: float = 0.06,
                     blank_logit: float | None = None) -> Tensor:
    """(..., d) speech tokens -> (..., V + 1) float32 scores: dot products with the table / tau, then the blank
    (index V) at ``blank_logit`` (None = :func:`default_blank_logit`)."""
    temperature = _finite("temperature", temperature, positive=True)
    if not isinstance(vocab_embeds, Tensor) or vocab_embeds.ndim != 2 or not vocab_embeds.is_floating_point():
        got = tuple(vocab_embeds.shape) if isinstance(vocab_embeds, Tensor) else type(vocab_embeds).__name__
        raise VocabCTCInputError(f"vocab_embeds must be a floating (V, d) tensor, got {got}")
    if speech_tokens.shape[-1] != vocab_embeds.shape[1]:
        raise VocabCTCInputError(f"speech tokens are {speech_tokens.shape[-1]} wide but vocab_embeds is "
                                 f"{tuple(vocab_embeds.shape)}: both must share the LLM's hidden size")
    blank_logit = default_blank_logit(vocab_embeds.shape[0]) if blank_logit is None else \
        _finite("blank_logit", blank_logit)
    with torch.autocast(device_type=speech_tokens.device.type, enabled=False):
        scores = speech_tokens.float() @ vocab_embeds.float().T / temperature
        blank = scores.new_full((*scores.shape[:-1], 1), blank_logit)
        return torch.cat([scores, blank], dim=-1)


def vocab_ctc_loss(speech_tokens: Tensor, speech_mask: Tensor, vocab_embeds: Tensor,
                   text_ids: Sequence[Sequence[int]], temperature: float = 0.06,
                   blank_logit: float | None = None, candidates: Tensor | None = None) -> Tensor:
    """The CTC loss of a batch (float32 scalar; formulas in the module docstring).

    Args:
        speech_tokens: (B, L, d) projected speech tokens.
        speech_mask: (B, L) bool, True at valid speech tokens (any pattern: valid tokens keep their order).
        vocab_embeds: (V, d) the LLM's input-embedding table (detach it to train only the speech side).
        text_ids: B transcripts as token-id lists in [0, V); an empty list = that sample has no transcript.
        temperature: tau > 0 dividing the dot products.
        blank_logit: the blank's constant score (None = ln V + 4, V the whole table's size).
        candidates: optional 1-D int64 ids: score only these entries of the table (a sampled softmax; every
            transcript id must be among them). On a CPU the (tokens x V) scores dominate a step's cost, and
            the word pieces a training set uses are a few thousand of 49,152; :func:`vocab_ctc_decode` still
            ranks the whole table.

    Returns:
        Sum of the samples' CTC losses over their total transcript tokens. Samples without a transcript or speech,
        and samples whose transcript cannot fit their speech tokens (CTC needs a token per id, plus one between
        repeated ids), count for nothing; if none counts the result is 0 and still attached to
        ``speech_tokens`` (zero gradient), so every rank of a distributed step runs a backward.
    """
    if not isinstance(speech_tokens, Tensor) or speech_tokens.ndim != 3 or not speech_tokens.is_floating_point():
        got = tuple(speech_tokens.shape) if isinstance(speech_tokens, Tensor) else type(speech_tokens).__name__
        raise VocabCTCInputError(f"speech_tokens must be a floating (B, L, d) tensor, got {got}")
    B, L, _ = speech_tokens.shape
    if not isinstance(speech_mask, Tensor) or speech_mask.dtype != torch.bool or tuple(speech_mask.shape) != (B, L):
        got = f"{speech_mask.dtype} {tuple(speech_mask.shape)}" if isinstance(speech_mask, Tensor) else \
            type(speech_mask).__name__
        raise VocabCTCInputError(f"speech_mask must be a bool ({B}, {L}) tensor, got {got}")
    if len(text_ids) != B:
        raise VocabCTCInputError(f"text_ids must hold one transcript per sample ({B}), got {len(text_ids)}")
    V = vocab_embeds.shape[0] if isinstance(vocab_embeds, Tensor) else 0
    ids = [list(map(int, t)) for t in text_ids]
    bad = [i for i, t in enumerate(ids) if any(v < 0 or v >= V for v in t)]
    if bad:
        raise VocabCTCInputError(f"text_ids of sample {bad[0]} fall outside the vocabulary [0, {V})")
    lengths = speech_mask.sum(1)
    keep = [b for b in range(B) if ids[b] and int(lengths[b]) >= _ctc_min_frames(ids[b])]
    zero = speech_tokens.float().sum() * 0.0
    if not keep:
        return zero
    table, targets_of = vocab_embeds, ids
    if blank_logit is None:
        blank_logit = default_blank_logit(V)
    if candidates is not None:
        table, targets_of = _restrict(vocab_embeds, candidates, ids)
    x, _ = _pack(speech_tokens[keep], speech_mask[keep])  # valid tokens first, padding zeroed
    logits = vocab_ctc_logits(x, table, temperature, blank_logit)  # (N, L, C+1), blank last
    with torch.autocast(device_type=speech_tokens.device.type, enabled=False):
        log_probs = torch.log_softmax(logits, dim=-1).transpose(0, 1)  # (L, N, C+1)
        targets = torch.tensor([v for b in keep for v in targets_of[b]], dtype=torch.long, device=logits.device)
        target_lengths = torch.tensor([len(ids[b]) for b in keep], dtype=torch.long, device=logits.device)
        total = torch.nn.functional.ctc_loss(log_probs, targets, lengths[keep].to(logits.device), target_lengths,
                                             blank=table.shape[0], reduction="sum", zero_infinity=True)
    return zero + total / target_lengths.sum()


@torch.no_grad()
def vocab_ctc_decode(speech_tokens: Tensor, speech_mask: Tensor, vocab_embeds: Tensor, temperature: float = 0.06,
                     blank_logit: float | None = None) -> list[list[int]]:
    """Greedy CTC read-out: per sample, the best-scoring entry of each valid speech token, repeats merged and
    blanks removed. Returns token ids (decode them with the LLM's tokenizer)."""
    out = []
    for b in range(speech_tokens.shape[0]):
        x = speech_tokens[b][speech_mask[b]]
        best = vocab_ctc_logits(x, vocab_embeds, temperature, blank_logit).argmax(-1).tolist()
        ids, prev = [], None
        for v in best:
            if v != prev and v != vocab_embeds.shape[0]:
                ids.append(v)
            prev = v
        out.append(ids)
    return out


def _restrict(vocab_embeds: Tensor, candidates: Tensor, ids: list[list[int]]) -> tuple[Tensor, list[list[int]]]:
    """The candidate rows of the table and each transcript's ids renumbered into them."""
    if not isinstance(candidates, Tensor) or candidates.ndim != 1 or candidates.is_floating_point():
        raise VocabCTCInputError("candidates must be a 1-D integer tensor of vocabulary ids")
    cand = candidates.tolist()
    where = {v: i for i, v in enumerate(cand)}
    if len(where) != len(cand) or any(v < 0 or v >= vocab_embeds.shape[0] for v in cand):
        raise VocabCTCInputError(f"candidates must be distinct ids in [0, {vocab_embeds.shape[0]})")
    missing = sorted({v for t in ids for v in t if v not in where})
    if missing:
        raise VocabCTCInputError(f"transcript ids {missing[:5]} are not among the candidates")
    return vocab_embeds[candidates.to(vocab_embeds.device)], [[where[v] for v in t] for t in ids]


def _ctc_min_frames(ids: Sequence[int]) -> int:
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


def _finite(name: str, value: float, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (positive and value <= 0):
        raise VocabCTCInputError(f"{name} must be a finite float{' > 0' if positive else ''}, got {value!r}")
    return float(value)
