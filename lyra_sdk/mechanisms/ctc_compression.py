r"""CTC compression: shorten a clip's speech tokens to about one token per word piece before the LLM.

An SDK extension (not in the Lyra paper; the idea follows CTC-based compression in speech translation). A
projector trained with ASR-CTC (:mod:`lyra_sdk.mechanisms.vocab_ctc`) makes every speech token either say a
word piece of the LLM's vocabulary or say "blank". At 10 tokens a second, speech outnumbers its transcript
about three to one, and most tokens are blank. Compression reads each token's CTC posterior over the
vocabulary + blank (the same scores as the loss: :func:`~lyra_sdk.mechanisms.vocab_ctc.vocab_ctc_logits`)
and

1. drops tokens whose blank posterior is at least ``blank_threshold``;
2. with ``merge_repeats``, replaces each run of consecutive kept tokens that share their best word piece by
   the run's mean (CTC spreads one word piece over several tokens).

The LLM then reads a sequence about as long as the typed text, in the same order. With ``output: tokens``
each position carries the projector's (merged) vector; with ``output: embeddings`` it carries the mix of the
LLM's own input embeddings under that vector's posterior over the word pieces (blank left out):
:math:`\sum_v p(v \mid x) e_v`, which is the typed word piece's embedding when the projector is sure, so
an LLM that never saw speech reads a confident clip as if it were typed. Either way the kept tokens keep
their gradient (through the softmax for ``embeddings``); which tokens are kept is a hard decision.

A clip whose tokens are all blank keeps its least-blank token, so a prompt never loses its speech slot.
Enable it per model with ``speech_compression: {mode: ctc}`` in the config; the temperature and blank score
must be those the projector was trained with (``loss.asr_ctc_temperature`` / ``loss.asr_ctc_blank``).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from .vocab_ctc import VocabCTCInputError, vocab_ctc_logits

__all__ = ["CompressionResult", "SpeechCompressionOptions", "ctc_compress"]

CHUNK = 1024
"""Tokens scored against the vocabulary at a time (1024 x 49,152 float32 scores: 200 MB)."""


class SpeechCompressionOptions(BaseModel):
    """``speech_compression`` in a model config (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["none", "ctc"] = Field("ctc", description="ctc = drop blank tokens, merge repeats; none = off")
    blank_threshold: float = Field(0.5, gt=0.0, le=1.0,
                                   description="drop a token whose blank posterior is at least this")
    merge_repeats: bool = Field(True, description="average consecutive kept tokens with the same best word piece")
    output: Literal["tokens", "embeddings"] = Field(
        "tokens", description="what the LLM reads per kept token: the projector's vector, or the mix of word-piece "
                              "embeddings under its posterior (blank left out)")
    temperature: float = Field(0.06, gt=0.0, description="as loss.asr_ctc_temperature when the projector trained")
    blank_logit: float | None = Field(None, description="as loss.asr_ctc_blank (None = ln V + 4)")


class CompressionResult(NamedTuple):
    """What :func:`ctc_compress` returns."""

    tokens: Tensor
    """(m, d) compressed tokens."""
    groups: Tensor
    """(m,) int64: the first original position each compressed token stands for."""


def ctc_compress(tokens: Tensor, vocab_embeds: Tensor, options: SpeechCompressionOptions | None = None) -> CompressionResult:
    """Compress one clip's (n, d) speech tokens (see the module docstring); ``mode: none`` returns them as-is."""
    options = options or SpeechCompressionOptions()
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or not tokens.is_floating_point():
        got = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise VocabCTCInputError(f"speech tokens to compress must be a floating (n, d) tensor, got {got}")
    n = tokens.shape[0]
    if options.mode == "none" or n == 0:
        return CompressionResult(tokens, torch.arange(n, device=tokens.device))
    with torch.no_grad():  # in pieces: hours of speech x a 49k vocabulary would not fit at once
        blank_parts, best_parts = [], []
        for piece in tokens.detach().split(CHUNK):
            post = vocab_ctc_logits(piece, vocab_embeds.detach(), options.temperature, options.blank_logit).softmax(-1)
            blank_parts.append(post[:, -1])
            best_parts.append(post[:, :-1].argmax(-1))
        blank, best = torch.cat(blank_parts), torch.cat(best_parts)
        keep = blank < options.blank_threshold
        if not bool(keep.any()):
            keep[int(blank.argmin())] = True
        idx = keep.nonzero().squeeze(-1)
        if options.merge_repeats and idx.numel() > 1:
            # a new group starts where the best piece changes or a dropped token lies between
            new = torch.ones_like(idx, dtype=torch.bool)
            new[1:] = (best[idx[1:]] != best[idx[:-1]]) | (idx[1:] != idx[:-1] + 1)
        else:
            new = torch.ones_like(idx, dtype=torch.bool)
        group_of = torch.cumsum(new.long(), 0) - 1  # (k,) group number of each kept token
        m = int(group_of[-1]) + 1
        counts = torch.zeros(m, dtype=tokens.dtype, device=tokens.device).index_add_(
            0, group_of, torch.ones_like(group_of, dtype=tokens.dtype))
    sums = tokens.new_zeros(m, tokens.shape[1]).index_add(0, group_of, tokens[idx])
    out = sums / counts[:, None]
    if options.output == "embeddings":
        table = vocab_embeds.float()
        out = torch.cat([(vocab_ctc_logits(piece, vocab_embeds, options.temperature, options.blank_logit)[:, :-1]
                          .softmax(-1) @ table) for piece in out.split(CHUNK)]).to(tokens.dtype)
    return CompressionResult(out, idx[new])
