"""Text generation with a KV cache: greedy or temperature / top-p sampling, seeded, batched, with stop ids."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .config import GenerationOptions
from .interfaces import LLMBackbone


@dataclass
class GenerationOutput:
    """Generated token ids per sample (stop token excluded) and the prompt positions used."""

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


@torch.no_grad()
def generate_tokens(
    llm: LLMBackbone,
    inputs_embeds: Tensor,
    attention_mask: Tensor,
    position_ids: Tensor,
    options: GenerationOptions,
) -> GenerationOutput:
    """Prefill on left-padded embeddings, then decode token by token through the cache."""
    device = inputs_embeds.device
    generator = None
    if options.temperature > 0.0:
        generator = torch.Generator(device=device)
        generator.manual_seed(options.seed if options.seed is not None else torch.seed())
    stop = torch.tensor(sorted({*llm.tokenizer.eos_token_ids, *options.stop_ids}), dtype=torch.long, device=device)
    bsz = inputs_embeds.shape[0]
    out = llm(inputs_embeds, attention_mask, position_ids=position_ids, use_cache=True, logits_to_keep=1)
    finished = torch.zeros(bsz, dtype=torch.bool, device=device)
    tokens: list[Tensor] = []
    pos = position_ids
    for step in range(options.max_new_tokens):
        nxt = sample_next(out.logits[:, -1].float(), options, generator)  # (B,)
        nxt = torch.where(finished, torch.full_like(nxt, llm.tokenizer.pad_token_id), nxt)
        tokens.append(nxt)
        finished = finished | torch.isin(nxt, stop)
        if bool(finished.all()) or step == options.max_new_tokens - 1:
            break
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=-1)
        pos = llm.next_position_ids(pos)
        out = llm(llm.embed_tokens(nxt[:, None]), attention_mask, position_ids=pos,
                  past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1)
    ids = torch.stack(tokens, dim=1).tolist() if tokens else [[] for _ in range(bsz)]
    stops = set(stop.tolist())
    seqs, done = [], []
    for row in ids:
        cut = next((i for i, t in enumerate(row) if t in stops), None)
        seqs.append(row if cut is None else row[:cut])
        done.append(cut is not None)
    return GenerationOutput(seqs, done)
