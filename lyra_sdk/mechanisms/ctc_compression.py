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

With ``decode: beam`` (inference only: a model in training mode compresses greedily, so gradients flow as
above), the word piece of each group is instead chosen by a beam search fused with the LLM's own prior over
the prompt's text before the speech (:mod:`~lyra_sdk.mechanisms.ctc_beam`), and the LLM reads the chosen
pieces' input embeddings: exactly what typing that transcript gives. Clips of more than ``beam_max_groups``
groups (long recordings) are compressed greedily. With ``beam_llm: base``, a prompt that is only speech (a
spoken question or instruction) is then answered with the LoRA adapters off, as the base LLM answers its typed
transcript (the route's own projector still hears the speech). Prompts with a typed instruction next to the
speech ("Transcribe the speech.") keep the route, which learned those tasks; so does a batch with any such
prompt or any clip compressed greedily into posterior mixes (with ``greedy_pieces: best`` a greedily
compressed clip is read as word pieces too, so it counts as typed-like).

A clip whose tokens are all blank keeps its least-blank token, so a prompt never loses its speech slot.
Enable it per model with ``speech_compression: {mode: ctc}`` in the config; the temperature and blank score
must be those the projector was trained with (``loss.asr_ctc_temperature`` / ``loss.asr_ctc_blank``).
"""

from __future__ import annotations

import logging
from typing import Literal, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from .ctc_beam import LMPrior, lm_beam_search
from .vocab_ctc import VocabCTCInputError, vocab_ctc_logits

log = logging.getLogger(__name__)

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
    greedy_pieces: Literal["mix", "best"] = Field(
        "mix", description="output: embeddings, greedy compression (training mode, no LM prior, long clips): mix = "
                           "each group's posterior mix of word-piece embeddings; best = its best piece's own "
                           "embedding, as the beam gives (no CE gradient reaches the projector through it)")
    decode: Literal["greedy", "beam"] = Field(
        "greedy", description="greedy = as greedy_pieces; beam = word pieces chosen by a beam search fused "
                              "with the LLM's prior (inference only; needs output: embeddings)")
    beam_size: int = Field(4, ge=1, description="hypotheses kept (decode: beam)")
    beam_candidates: int = Field(6, ge=1, description="word pieces offered per group (decode: beam)")
    lm_weight: float = Field(0.3, ge=0.0, description="weight of the LLM's log-probability (decode: beam)")
    skip_score: float = Field(-3.0, le=0.0, description="score of dropping a group altogether (decode: beam)")
    skip_from_blank: bool = Field(
        False, description="decode: beam: weigh each group by its blank posterior b too: each piece scores its "
                           "posterior over all outputs (log(1 - b) lower), dropping it scores log b + skip_score, "
                           "so an unsure group is easier to drop than a confident one (pairs with a higher "
                           "blank_threshold, which lets unsure groups in)")
    token_bonus: float = Field(0.5, description="score added per kept word piece (decode: beam)")
    beam_max_groups: int = Field(256, ge=1, description="longer clips are compressed greedily (decode: beam)")
    beam_llm: Literal["route", "base"] = Field(
        "route", description="base = a prompt that is only speech (a spoken instruction), routed automatically and "
                             "turned into word pieces by the beam, is answered with the LoRA adapters off, as its "
                             "typed transcript is (decode: beam; prompts with a typed instruction keep the route)")

    @model_validator(mode="after")
    def _beam_reads_embeddings(self) -> "SpeechCompressionOptions":
        if self.decode == "beam" and self.output != "embeddings":
            raise ValueError("decode: beam chooses word pieces, so it needs output: embeddings")
        return self


class CompressionResult(NamedTuple):
    """What :func:`ctc_compress` returns."""

    tokens: Tensor
    """(m, d) compressed tokens."""
    groups: Tensor
    """(m,) int64: the first original position each compressed token stands for."""
    pieces: Tensor | None = None
    """(m,) int64: the word pieces the beam chose (``tokens`` are their input embeddings); None when the
    compression was greedy."""


def ctc_compress(tokens: Tensor, vocab_embeds: Tensor, options: SpeechCompressionOptions | None = None,
                 prior: LMPrior | None = None, end_id: int | None = None) -> CompressionResult:
    """Compress one clip's (n, d) speech tokens (see the module docstring); ``mode: none`` returns them as-is.

    With ``decode: beam`` and a ``prior`` (the LLM over the prompt's text before the speech; ``end_id`` the
    prompt's token right after the speech, e.g. the end of the user turn), each group's word piece is chosen by :func:`~lyra_sdk.mechanisms.ctc_beam.lm_beam_search`;
    without a prior, compression is greedy."""
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
    if options.decode == "beam" and prior is not None:
        if m <= options.beam_max_groups:
            return _beam(out, idx[new], vocab_embeds, options, prior, end_id)
        log.info("speech of %d word-piece groups is longer than beam_max_groups=%d: compressed greedily",
                 m, options.beam_max_groups)
    if options.output == "embeddings" and options.greedy_pieces == "best":
        ids = best[idx[new]]  # a group's tokens share their best piece (that is what makes them one group)
        return CompressionResult(vocab_embeds[ids].to(tokens.dtype), idx[new], ids)
    if options.output == "embeddings":
        table = vocab_embeds.float()
        out = torch.cat([(vocab_ctc_logits(piece, vocab_embeds, options.temperature, options.blank_logit)[:, :-1]
                          .softmax(-1) @ table) for piece in out.split(CHUNK)]).to(tokens.dtype)
    return CompressionResult(out, idx[new])


@torch.no_grad()
def _beam(groups: Tensor, starts: Tensor, vocab_embeds: Tensor, options: SpeechCompressionOptions, prior: LMPrior,
          end_id: int | None) -> CompressionResult:
    """Choose each group's word piece by the LM-fused beam search; the LLM reads their own embeddings."""
    k = min(options.beam_candidates, vocab_embeds.shape[0])
    cands, skips = [], []
    for piece in groups.split(CHUNK):
        logits = vocab_ctc_logits(piece, vocab_embeds, options.temperature, options.blank_logit)
        if options.skip_from_blank:  # pieces over all outputs; the skip starts from the blank's log posterior
            full = logits.log_softmax(-1)
            lp = full[:, :-1]
            skips += (full[:, -1] + options.skip_score).tolist()
        else:
            lp = logits[:, :-1].log_softmax(-1)
        top = lp.topk(k, dim=-1)
        cands += [list(zip(i.tolist(), v.tolist(), strict=True)) for i, v in zip(top.indices, top.values, strict=True)]
    chosen = lm_beam_search(cands, prior, end_id, options.beam_size, options.lm_weight,
                            skips if options.skip_from_blank else options.skip_score, options.token_bonus)
    if not chosen:  # every group skipped: keep the surest one, so the prompt keeps its speech slot
        g = max(range(len(cands)), key=lambda i: cands[i][0][1])
        chosen = [(g, cands[g][0][0])]
    ids = torch.tensor([t for _, t in chosen], device=vocab_embeds.device)
    where = torch.tensor([g for g, _ in chosen], device=starts.device)
    return CompressionResult(vocab_embeds[ids].to(groups.dtype), starts[where], ids)
