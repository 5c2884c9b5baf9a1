r"""LM-fused beam search over CTC-compressed speech: the LLM's own prior on what was said.

An SDK extension used by :mod:`~lyra_sdk.mechanisms.ctc_compression` with ``decode: beam`` (inference only).
Greedy compression keeps, for each group of speech tokens, the mix of word pieces under its posterior, and the
LLM reads that mix; when the projector is unsure (a held-out voice, a rare word), the best-scoring piece is
often a near-homophone that breaks the sentence ("going to tomatoes"). Here each group offers its
``beam_candidates`` best word pieces with their CTC log posteriors :math:`\log p(v \mid g)`, or no piece at
all (a spurious group: score ``skip_score``), and a beam of ``beam_size`` hypotheses is scored by

.. math::

    \sum_g \big[\log p(v_g \mid g) + \lambda \log P_{\mathrm{LLM}}(v_g \mid \text{context}, v_{<g}) + \beta\big]
    + \lambda \log P_{\mathrm{LLM}}(\text{the prompt's next token, e.g. the end of the turn} \mid \ldots)

(shallow fusion; :math:`\lambda` = ``lm_weight``, :math:`\beta` = ``token_bonus`` per kept piece, which keeps
the LM from preferring to skip). With ``skip_from_blank`` each group's blank posterior :math:`b_g` enters too:
a piece scores its posterior over all outputs, :math:`\log p(v \mid g) + \log(1 - b_g)`, and dropping the group
scores :math:`\log b_g` + ``skip_score``, so the LM can drop an unsure group but hardly a confident one
(with a ``blank_threshold`` above 0.5, groups the projector was unsure of get this chance instead of being
dropped before the search). The context is the prompt's text before the speech (system prompt and the
user turn's opening), and the LLM runs with adapters off: it scores the transcript as a typed message. The
CTC vocabulary *is* the LLM's vocabulary, so no lexicon or separate LM is needed. The LLM then reads the
winning pieces' own input embeddings: exactly what typing that transcript gives.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

__all__ = ["BackbonePrior", "LMPrior", "PriorState", "lm_beam_search"]


class PriorState(NamedTuple):
    """A scored prefix: log-probabilities of the next token, and what the prior needs to continue it."""

    logprobs: Tensor
    """(V,) float32 log-probabilities of the next token."""
    cache: Any
    """The prior's own continuation state (for :class:`BackbonePrior`, the KV cache)."""
    position_ids: Tensor
    """Positions of the last token(s) fed."""
    length: int
    """Tokens seen so far: context + appended."""


class LMPrior(Protocol):
    """What the beam search asks of a language model."""

    def start(self) -> PriorState:
        """The state after the fixed context."""

    def step(self, state: PriorState, token_id: int) -> PriorState:
        """The state after appending ``token_id`` to ``state``'s prefix (``state`` stays usable)."""


class BackbonePrior:
    """An :class:`~lyra_sdk.interfaces.LLMBackbone` scoring continuations of ``context_ids`` through its KV cache.

    Adapters are the caller's business (the model switches them off around the search).
    """

    def __init__(self, llm: Any, context_ids: Sequence[int]) -> None:
        if not context_ids:
            raise ValueError("the LM prior needs at least one context token (e.g. the chat template's opening)")
        self.llm, self.context_ids = llm, list(context_ids)

    @torch.no_grad()
    def start(self) -> PriorState:
        ids = torch.tensor([self.context_ids], device=self.llm.device)
        mask = torch.ones_like(ids)
        pos = self.llm.position_ids(mask)
        out = self.llm(self.llm.embed_tokens(ids), mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        return PriorState(out.logits[0, -1].float().log_softmax(-1), out.past_key_values, pos, len(self.context_ids))

    @torch.no_grad()
    def step(self, state: PriorState, token_id: int) -> PriorState:
        cache = copy.deepcopy(state.cache)  # a forward extends its cache in place, and siblings share the parent
        pos = self.llm.next_position_ids(state.position_ids)
        mask = torch.ones(1, state.length + 1, dtype=torch.long, device=self.llm.device)
        ids = torch.tensor([[token_id]], device=self.llm.device)
        out = self.llm(self.llm.embed_tokens(ids), mask, position_ids=pos, past_key_values=cache, use_cache=True,
                       logits_to_keep=1)
        return PriorState(out.logits[0, -1].float().log_softmax(-1), out.past_key_values, pos, state.length + 1)


def lm_beam_search(candidates: Sequence[Sequence[tuple[int, float]]], prior: LMPrior, end_id: int | None,
                   beam_size: int = 4, lm_weight: float = 0.3, skip_score: float | Sequence[float] = -3.0,
                   token_bonus: float = 0.5) -> list[tuple[int, int]]:
    """Pick one word piece (or none) per group; returns the kept ``(group index, token id)`` pairs in order.

    ``candidates[g]`` lists group ``g``'s ``(token id, CTC log posterior)`` options, best first. ``skip_score``
    is the score of dropping a group: one for all, or one per group. With ``lm_weight`` 0 and a very low
    ``skip_score`` this is the greedy choice. ``end_id`` (the prompt's token after the speech, e.g. the end of
    the turn) scores how well each finished hypothesis ends; None skips it.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")
    skips = [float(s) for s in skip_score] if isinstance(skip_score, Sequence) else [float(skip_score)] * len(candidates)
    if len(skips) != len(candidates):
        raise ValueError(f"skip_score lists {len(skips)} groups' scores for {len(candidates)} groups")
    beams: list[tuple[tuple[tuple[int, int], ...], float, PriorState]] = [((), 0.0, prior.start())]
    for g, options in enumerate(candidates):
        scored: list[tuple[float, int, int | None]] = []  # (score, beam index, token or None = skip)
        for b, (_, score, state) in enumerate(beams):
            scored.append((score + skips[g], b, None))
            lp = state.logprobs
            for tid, ac in options:
                scored.append((score + ac + lm_weight * float(lp[tid]) + token_bonus, b, tid))
        scored.sort(key=lambda x: -x[0])
        seen: set[tuple[int, ...]] = set()
        nxt = []
        for score, b, tid in scored:
            seq, _, state = beams[b]
            new = seq + (((g, tid),) if tid is not None else ())
            key = tuple(t for _, t in new)
            if key in seen:
                continue
            seen.add(key)
            nxt.append((new, score, prior.step(state, tid) if tid is not None else state))
            if len(nxt) == beam_size:
                break
        beams = nxt
    if end_id is not None:
        beams = [(s, score + lm_weight * float(st.logprobs[end_id]), st) for s, score, st in beams]
    return list(max(beams, key=lambda x: x[1])[0])
