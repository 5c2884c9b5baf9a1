"""Text generation with a KV cache: greedy or temperature / top-p sampling, seeded, batched, with stop ids.

:func:`iter_tokens` is the one decoding loop; it yields each step's tokens (and, on request, the LLM's
last-layer hidden state *of* those tokens, which the speech decoder consumes while text is still being
generated). :func:`generate_tokens` collects it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .config import GenerationOptions
from .interfaces import LatentExtractor, LLMBackbone


@dataclass
class TokenStep:
    """One decoding step: ``tokens`` (B,), ``active`` (B,) bool = the row was still generating (its token is real,
    possibly a stop token), ``stopped`` (B,) bool = this token is a stop token, ``hidden`` (B, D) the last-layer
    hidden state of ``tokens`` (only when asked for)."""

    tokens: Tensor
    active: Tensor
    stopped: Tensor
    hidden: Tensor | None = None


@dataclass
class GenerationOutput:
    """Generated token ids per sample (stop token excluded) and whether each sample stopped on a stop token."""

    sequences: list[list[int]]
    finished: list[bool]


def sample_next(logits: Tensor, options: GenerationOptions, generator: torch.Generator | None) -> Tensor:
    """(B, V) logits -> (B,) next ids: argmax when temperature is 0, else temperature + top-p sampling."""
    if options.temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / options.temperature, dim=-1)
    if options.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        cum = sorted_p.cumsum(dim=-1)
        drop = cum - sorted_p > options.top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def stop_ids(llm: LLMBackbone, options: GenerationOptions) -> list[int]:
    """The tokenizer's end-of-turn ids plus ``options.stop_ids``."""
    return sorted({*llm.tokenizer.eos_token_ids, *options.stop_ids})


class _PlainDecoder:
    """Prefill + cached decode steps through the backbone's own forward."""

    def __init__(self, llm: LLMBackbone, embeds: Tensor, mask: Tensor, pos: Tensor) -> None:
        self.llm, self.mask = llm, mask
        self.out = llm(embeds, mask, position_ids=pos, use_cache=True, logits_to_keep=1)

    def logits(self) -> Tensor:
        return self.out.logits[:, -1]

    def step(self, embeds: Tensor, pos: Tensor) -> Tensor:
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=-1)
        self.out = self.llm(embeds, self.mask, position_ids=pos, past_key_values=self.out.past_key_values,
                            use_cache=True, logits_to_keep=1)
        return self.out.hidden_states[:, -1]


class _ExtractingDecoder:
    """Prefill with LMME token extraction, then decode with per-layer KV lengths."""

    def __init__(self, llm: LLMBackbone, embeds: Tensor, mask: Tensor, pos: Tensor, media_mask: Tensor,
                 extractor: LatentExtractor) -> None:
        from transformers import DynamicCache

        from .mechanisms.extraction import LayerwiseLM, extract_forward

        self.lm = LayerwiseLM(llm)
        self.state = extract_forward(self.lm, embeds, mask, pos, media_mask, extractor, cache=DynamicCache())
        self._logits = self.state.logits_last

    def logits(self) -> Tensor:
        return self._logits

    def step(self, embeds: Tensor, pos: Tensor) -> Tensor:
        from .mechanisms.extraction import extract_decode_step

        out = extract_decode_step(self.lm, self.state, embeds, pos)
        self.state, self._logits = out.state, out.logits
        return out.hidden


@torch.no_grad()
def iter_tokens(llm: LLMBackbone, inputs_embeds: Tensor, attention_mask: Tensor, position_ids: Tensor,
                options: GenerationOptions, with_hidden: bool = False, media_mask: Tensor | None = None,
                extractor: LatentExtractor | None = None) -> Iterator[TokenStep]:
    """Prefill on left-padded embeddings, then decode token by token through the cache, yielding each step.

    With an ``extractor`` (LMME) and a ``media_mask``, media tokens are pruned inside the prefill and decoding
    runs on the shorter per-layer caches.
    """
    device = inputs_embeds.device
    generator = None
    if options.temperature > 0.0:
        generator = torch.Generator(device=device)
        generator.manual_seed(options.seed if options.seed is not None else int(torch.seed() % 2**63))
    stop = torch.tensor(stop_ids(llm, options), dtype=torch.long, device=device)
    bsz = inputs_embeds.shape[0]
    if extractor is not None and media_mask is not None and bool(media_mask.any()) and getattr(extractor, "enabled", True):
        dec: _PlainDecoder | _ExtractingDecoder = _ExtractingDecoder(llm, inputs_embeds, attention_mask, position_ids,
                                                                     media_mask, extractor)
    else:
        dec = _PlainDecoder(llm, inputs_embeds, attention_mask, position_ids)
    finished = torch.zeros(bsz, dtype=torch.bool, device=device)
    pos = position_ids
    for step in range(options.max_new_tokens):
        nxt = sample_next(dec.logits().float(), options, generator)  # (B,)
        active = ~finished
        nxt = torch.where(active, nxt, torch.full_like(nxt, llm.tokenizer.pad_token_id))
        stopped = active & torch.isin(nxt, stop)
        finished = finished | stopped
        last = bool(finished.all()) or step == options.max_new_tokens - 1
        hidden = None
        if not last or with_hidden:
            pos = llm.next_position_ids(pos)
            hidden = dec.step(llm.embed_tokens(nxt[:, None]), pos)  # (B, D): the hidden state of `nxt`
        yield TokenStep(nxt, active, stopped, hidden)
        if last:
            return


def generate_tokens(llm: LLMBackbone, inputs_embeds: Tensor, attention_mask: Tensor, position_ids: Tensor,
                    options: GenerationOptions, media_mask: Tensor | None = None,
                    extractor: LatentExtractor | None = None) -> GenerationOutput:
    """Run :func:`iter_tokens` to the end and collect each row's ids (stop tokens excluded)."""
    bsz = inputs_embeds.shape[0]
    seqs: list[list[int]] = [[] for _ in range(bsz)]
    done = [False] * bsz
    for step in iter_tokens(llm, inputs_embeds, attention_mask, position_ids, options, media_mask=media_mask,
                            extractor=extractor):
        for b in range(bsz):
            if bool(step.stopped[b]):
                done[b] = True
            elif bool(step.active[b]):
                seqs[b].append(int(step.tokens[b]))
    return GenerationOutput(seqs, done)
