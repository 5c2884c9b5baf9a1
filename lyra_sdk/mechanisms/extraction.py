"""Latent multi-modality extraction (LMME): drop the media tokens the text attends to least, inside the LLM forward.

The decoder layers of a transformers causal LM are driven here one by one (no patching of transformers):

- layers run in *groups* of ``gap``; after the last layer of a group (never after the model's last layer) each
  media token is scored by the attention it receives from the text-query tokens (the non-media tokens after the
  sample's first media token), recomputed from that layer's input in fp32 without gradients;
- a :class:`lyra_sdk.interfaces.LatentExtractor` (by default :class:`TopKExtractor`) picks the media tokens that
  survive; the others leave the hidden states, the (original, possibly 3-D M-RoPE) position ids and the masks.
  Text tokens are never dropped and order is preserved; rows are re-padded on the left;
- with a KV cache, each layer caches only the tokens it saw, so later layers hold shorter caches.
  :func:`extract_decode_step` decodes one token through all layers with one mask per group that follows that
  group's own cache length.

Shapes: B batch, L sequence, D hidden, V vocabulary, H heads, Lk the keys a group's layers hold.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Self

import torch
from pydantic import Field
from torch import Tensor, nn

from ..errors import ConfigError, LyraError
from ..interfaces import LatentExtractor, PluginOptions


class ExtractionOptions(PluginOptions):
    """LMME options: ``keep`` (rho) = fraction of the current media tokens kept at each pruning step (1.0 = off),
    ``gap`` = prune after layer i when (i + 1) % gap == 0 (never after the last layer), ``min_keep`` = never keep
    fewer media tokens per sample than this (all when a sample has fewer)."""

    keep: float = Field(1.0, gt=0.0, le=1.0, description="fraction of media tokens kept per pruning step (rho)")
    gap: int = Field(7, gt=0, description="prune after every `gap` layers")
    min_keep: int = Field(32, ge=0, description="minimum media tokens kept per sample")


class TopKExtractor(LatentExtractor):
    """Keeps the ``max(min_keep, ceil(keep * n_media))`` highest-scored media tokens of each sample (the paper's rule).

    Ties are broken towards the earlier token, so the choice is deterministic.
    """

    Options = ExtractionOptions

    def __init__(self, options: ExtractionOptions) -> None:
        self.options = options
        self.gap = options.gap

    @classmethod
    def from_options(cls, options: ExtractionOptions) -> Self:
        """Build from validated options."""
        return cls(options)

    @property
    def enabled(self) -> bool:
        """False when ``keep`` is 1.0: nothing is ever dropped, so no scoring is needed."""
        return self.options.keep < 1.0

    def budget(self, n_media: Tensor) -> Tensor:
        """(B,) media counts -> (B,) how many of them survive."""
        n = n_media.double()
        k = torch.ceil(n * self.options.keep - 1e-9).long().clamp(min=self.options.min_keep)
        return torch.minimum(k, n_media.long())

    def select(self, scores: Tensor, media_mask: Tensor) -> Tensor:
        """``scores`` (B, L), ``media_mask`` (B, L) bool -> keep mask (B, L) bool; non-media tokens are always kept."""
        bsz, length = scores.shape
        masked = scores.float().masked_fill(~media_mask, float("-inf"))
        order = torch.argsort(masked, dim=1, descending=True, stable=True)  # (B, L)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(length, device=scores.device).expand(bsz, length))
        k = self.budget(media_mask.sum(dim=1))  # (B,)
        return ~media_mask | (rank < k[:, None])


# ---------------------------------------------------------------------------------------------- the model adapter


class LayerwiseLM:
    """The parts of a transformers causal LM needed to run its decoder layers one at a time.

    Accepts a ``Qwen2ForCausalLM`` / ``LlamaForCausalLM`` (layers at ``model.model.layers``), a
    ``Qwen2VLForConditionalGeneration`` (``model.model.language_model.layers``), Lyra's Qwen2-VL text LM, or a
    Lyra :class:`~lyra_sdk.interfaces.LLMBackbone` that wraps one of these in ``.model``.
    """

    def __init__(self, model: Any) -> None:
        from ..interfaces import LLMBackbone

        if isinstance(model, LLMBackbone):
            model = getattr(model, "model", None)
        inner = getattr(model, "model", None)
        if inner is not None and hasattr(inner, "language_model") and hasattr(inner.language_model, "layers"):
            text = inner.language_model
        elif inner is not None and hasattr(inner, "layers"):
            text = inner
        else:
            raise LyraError(f"LMME needs a transformers causal LM with model.layers or model.language_model.layers; "
                            f"got {type(model).__name__}")
        head = getattr(model, "lm_head", None)
        if head is None:
            raise LyraError(f"LMME: {type(model).__name__} has no lm_head")
        self.model = model
        self.text_model = text
        self.layers: nn.ModuleList = text.layers
        self.rotary_emb: nn.Module = text.rotary_emb
        self.norm: nn.Module = text.norm
        self.lm_head: nn.Module = head
        self.config = text.config
        self.mrope = hasattr(self.rotary_emb, "mrope_section")
        types = set(getattr(self.config, "layer_types", None) or ["full_attention"])
        if types != {"full_attention"}:
            raise LyraError(f"LMME supports full-attention layers only; this model has {sorted(types)}")
        impl = getattr(self.config, "_attn_implementation", None) or "eager"
        if impl not in ("sdpa", "eager"):
            raise ConfigError([("llm.options.attn_implementation",
                                f"LMME drives the layers with explicit masks: use 'sdpa' or 'eager', not {impl!r}")])
        self.attn_implementation = impl
        attn = self.layers[0].self_attn
        # The rotary function of the model's own family (Qwen2-VL recomposes M-RoPE inside its rotary module).
        self.apply_rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb

    @property
    def num_layers(self) -> int:
        """Number of decoder layers."""
        return len(self.layers)

    def position_embeddings(self, hidden: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        """(cos, sin) for (B, L) or (3, B, L) positions, as the text model computes them."""
        if position_ids.ndim == 3 and not self.mrope:
            raise LyraError("3-D (M-RoPE) position ids given to a model without M-RoPE")
        if position_ids.ndim == 2 and self.mrope:
            position_ids = position_ids[None].expand(3, *position_ids.shape)
        return self.rotary_emb(hidden, position_ids)

    def layer_mask(self, allowed: Tensor, dtype: torch.dtype) -> Tensor:
        """(B, 1, Lq, Lk) bool "may attend" -> the mask format of the attention implementation."""
        if self.attn_implementation == "sdpa":
            return allowed
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min)

    def run_layer(self, i: int, hidden: Tensor, allowed: Tensor, cos_sin: tuple[Tensor, Tensor],
                  cache: Any | None) -> Tensor:
        """Layer ``i`` on (B, L, D) with a (B, 1, L, Lk) bool mask, as the text model calls it."""
        return self.layers[i](hidden, attention_mask=self.layer_mask(allowed, hidden.dtype), position_embeddings=cos_sin,
                              past_key_values=cache, use_cache=cache is not None)

    @torch.no_grad()
    def attention_received(self, i: int, hidden: Tensor, cos_sin: tuple[Tensor, Tensor], allowed: Tensor,
                           query_mask: Tensor, chunk: int = 256) -> Tensor:
        """Attention each key receives at layer ``i`` from the query tokens, averaged over heads and queries.

        ``hidden`` (B, L, D) is layer i's *input*; ``allowed`` (B, 1, L, L) its bool mask; ``query_mask`` (B, L)
        bool the query tokens. Returns (B, L) fp32 (zeros for a row without queries). Only the query rows are
        computed, ``chunk`` at a time, so memory is O(H * chunk * L), not O(H * L^2).
        """
        layer = self.layers[i]
        attn = layer.self_attn
        bsz, length, _ = hidden.shape
        x = layer.input_layernorm(hidden)
        hd = attn.head_dim
        q = attn.q_proj(x).view(bsz, length, -1, hd).transpose(1, 2)  # (B, H, L, hd)
        k = attn.k_proj(x).view(bsz, length, -1, hd).transpose(1, 2)  # (B, Hkv, L, hd)
        cos, sin = cos_sin
        q, k = self.apply_rotary(q, k, cos, sin)
        q, k = q.float(), k.float()
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # GQA: (B, H, L, hd), as transformers' repeat_kv
        n_q = query_mask.sum(dim=1)  # (B,)
        nq_max = int(n_q.max()) if bsz else 0
        total = torch.zeros(bsz, length, dtype=torch.float32, device=hidden.device)
        if nq_max == 0:
            return total
        # Query positions per row, left-aligned; padding slots point at position 0 and are weighted 0.
        order = torch.argsort((~query_mask).long(), dim=1, stable=True)[:, :nq_max]  # (B, Q)
        slot_ok = torch.arange(nq_max, device=hidden.device)[None] < n_q[:, None]  # (B, Q)
        for s in range(0, nq_max, chunk):
            idx = order[:, s:s + chunk]  # (B, C)
            ok = slot_ok[:, s:s + chunk]
            qc = q.gather(2, idx[:, None, :, None].expand(-1, q.shape[1], -1, hd))  # (B, H, C, hd)
            logits = torch.matmul(qc, k.transpose(-1, -2)) * attn.scaling  # (B, H, C, L)
            mask = allowed[:, 0].gather(1, idx[:, :, None].expand(-1, -1, length))  # (B, C, L)
            probs = torch.softmax(logits.masked_fill(~mask[:, None], float("-inf")), dim=-1)
            probs = probs.mean(dim=1) * ok[:, :, None]  # (B, C, L)
            total += probs.sum(dim=1)
        return total / n_q.clamp(min=1)[:, None].float()


# ---------------------------------------------------------------------------------------------- forward / decode


@dataclass
class ExtractionResult:
    """Output of :func:`extract_forward`.

    ``hidden`` (B, L', D) after the final norm (L' <= L: the surviving tokens, left-padded); ``logits_last`` (B, V)
    at the last position; ``kept`` (B, L') long indices into the original sequence, -1 at padding (gather labels with
    :func:`gather_kept`); ``attention_mask`` (B, L') long and ``position_ids`` (B, L') or (3, B, L') of the surviving
    tokens; ``groups`` the layer ranges [start, end) that share one sequence; ``key_valid[g]`` (B, Lk_g) bool the
    valid keys in the cache of group g's layers; ``cache`` the KV cache (None without one).
    """

    hidden: Tensor
    logits_last: Tensor
    kept: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    groups: list[tuple[int, int]]
    key_valid: list[Tensor]
    cache: Any | None = None


@dataclass
class DecodeStep:
    """Output of :func:`extract_decode_step`: ``logits`` (B, V), ``hidden`` (B, D) after the final norm, and the
    updated decoding ``state`` (pass it to the next step)."""

    logits: Tensor
    hidden: Tensor
    state: ExtractionResult


def layer_groups(num_layers: int, gap: int) -> list[tuple[int, int]]:
    """Layer ranges [start, end) between pruning points: prune after layer i when (i + 1) % gap == 0, never after
    the last layer. ``layer_groups(28, 7)`` -> [(0, 7), (7, 14), (14, 21), (21, 28)]."""
    cuts = [i + 1 for i in range(num_layers - 1) if (i + 1) % gap == 0]
    bounds = [0, *cuts, num_layers]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def gather_kept(values: Tensor, kept: Tensor, fill: int | float = -100) -> Tensor:
    """Per-token values (B, L) of the original sequence -> (B, L') for the surviving tokens; ``fill`` at padding.

    Labels for training: ``gather_kept(labels, result.kept)`` then the usual shift. Text tokens are never dropped,
    so an answer's next-token targets are unchanged.
    """
    out = values.gather(1, kept.clamp(min=0))
    return out.masked_fill(kept < 0, fill)


def _causal_allowed(valid: Tensor) -> Tensor:
    """(B, L) bool valid -> (B, 1, L, L) bool: causal and key valid; a padding query sees itself (no empty rows)."""
    length = valid.shape[1]
    ar = torch.arange(length, device=valid.device)
    causal = ar[None, :] <= ar[:, None]  # (Lq, Lk)
    diag = ar[None, :] == ar[:, None]
    return (causal[None] & (valid[:, None, :] | diag[None]))[:, None]


def _compact(keep: Tensor) -> tuple[Tensor, Tensor]:
    """(B, L) bool keep -> gather index (B, L') and new valid (B, L'): kept tokens in order, left-padded."""
    length = keep.shape[1]
    counts = keep.sum(dim=1)
    new_len = int(counts.max()) if keep.shape[0] else 0
    order = torch.argsort(keep.long(), dim=1, stable=True)[:, length - new_len:]  # dropped first, kept last
    valid = torch.arange(new_len, device=keep.device)[None] >= (new_len - counts)[:, None]
    return order, valid


def _resolve(extractor: LatentExtractor | ExtractionOptions) -> LatentExtractor:
    if isinstance(extractor, ExtractionOptions):
        return TopKExtractor(extractor)
    if isinstance(extractor, LatentExtractor):
        return extractor
    raise LyraError(f"expected ExtractionOptions or a LatentExtractor, got {type(extractor).__name__}")


def extract_forward(lm: LayerwiseLM | Any, inputs_embeds: Tensor, attention_mask: Tensor, position_ids: Tensor,
                    media_mask: Tensor, options: ExtractionOptions | LatentExtractor,
                    cache: Any | None = None) -> ExtractionResult:
    """Run the decoder on ``inputs_embeds`` (B, L, D), dropping low-attention media tokens every ``gap`` layers.

    ``attention_mask`` (B, L) 1 for real tokens (left or right padding); ``position_ids`` (B, L) or (3, B, L);
    ``media_mask`` (B, L) bool (``FusedBatch.media_mask``); ``cache`` an empty transformers ``DynamicCache`` to
    fill for decoding, or None (training). Gradients flow through the layers; scoring has none.
    """
    if not isinstance(lm, LayerwiseLM):
        lm = LayerwiseLM(lm)
    extractor = _resolve(options)
    bsz, length, _ = inputs_embeds.shape
    if attention_mask.shape != (bsz, length) or media_mask.shape != (bsz, length):
        raise LyraError(f"attention_mask and media_mask must be (B, L) = {(bsz, length)}; got "
                        f"{tuple(attention_mask.shape)} and {tuple(media_mask.shape)}")
    if position_ids.shape[-2:] != (bsz, length):
        raise LyraError(f"position_ids must be (B, L) or (3, B, L) with (B, L) = {(bsz, length)}; "
                        f"got {tuple(position_ids.shape)}")
    if cache is not None and cache.get_seq_length() > 0:
        raise LyraError("extract_forward starts a sequence: give an empty cache (continuing a cache is not supported)")
    enabled = getattr(extractor, "enabled", True)
    groups = layer_groups(lm.num_layers, extractor.gap)
    device = inputs_embeds.device
    valid = attention_mask.bool()
    media = media_mask.bool() & valid
    pos = position_ids
    kept = torch.arange(length, device=device)[None].expand(bsz, length).masked_fill(~valid, -1)
    hidden = inputs_embeds
    key_valid: list[Tensor] = []
    for g, (start, end) in enumerate(groups):
        allowed = _causal_allowed(valid)
        cos_sin = lm.position_embeddings(hidden, pos)
        key_valid.append(valid)
        prune = enabled and g < len(groups) - 1
        for i in range(start, end):
            if prune and i == end - 1:
                # Query tokens: text after the sample's first media token.
                queries = valid & ~media & (media.long().cumsum(dim=1) > 0)
                scores = lm.attention_received(i, hidden, cos_sin, allowed, queries)
            hidden = lm.run_layer(i, hidden, allowed, cos_sin, cache)
        if not prune:
            continue
        keep = extractor.select(scores, media) & valid
        idx, valid = _compact(keep)
        hidden = hidden.gather(1, idx[:, :, None].expand(-1, -1, hidden.shape[-1]))
        pos = pos.gather(-1, idx.expand(*pos.shape[:-2], -1, -1) if pos.ndim == 3 else idx)
        media = media.gather(1, idx) & valid
        kept = kept.gather(1, idx).masked_fill(~valid, -1)
    hidden = lm.norm(hidden)
    logits_last = lm.lm_head(hidden[:, -1])
    return ExtractionResult(hidden, logits_last, kept, valid.long(), pos, groups, key_valid, cache)


def extract_decode_step(lm: LayerwiseLM | Any, state: ExtractionResult, new_embeds: Tensor, new_position_ids: Tensor,
                        cache: Any | None = None) -> DecodeStep:
    """Decode one token (``new_embeds`` (B, 1, D), positions (B, 1) or (3, B, 1)) through every layer.

    Each group's layers attend to their own cached keys (``state.key_valid[g]``) plus the new one. ``cache``
    defaults to ``state.cache``. The new token is always valid (finished rows keep decoding padding tokens, as in
    :func:`lyra_sdk.generation.iter_tokens`). Only left-padded prefills can be continued (the new key is appended
    after the cached ones).
    """
    if not isinstance(lm, LayerwiseLM):
        lm = LayerwiseLM(lm)
    cache = state.cache if cache is None else cache
    if cache is None:
        raise LyraError("extract_decode_step needs the KV cache filled by extract_forward")
    bsz = new_embeds.shape[0]
    hidden = new_embeds
    cos_sin = lm.position_embeddings(hidden, new_position_ids)
    one = torch.ones(bsz, 1, dtype=torch.bool, device=new_embeds.device)
    key_valid = []
    for (start, end), kv in zip(state.groups, state.key_valid, strict=True):
        kv = torch.cat([kv, one], dim=1)  # (B, Lk_g + 1)
        key_valid.append(kv)
        allowed = kv[:, None, None, :]  # (B, 1, 1, Lk_g + 1)
        for i in range(start, end):
            hidden = lm.run_layer(i, hidden, allowed, cos_sin, cache)
    hidden = lm.norm(hidden)[:, -1]  # (B, D)
    logits = lm.lm_head(hidden)
    pos = torch.cat([state.position_ids, new_position_ids], dim=-1)
    mask = torch.cat([state.attention_mask, one.long()], dim=1)
    kept = torch.cat([state.kept, torch.full_like(state.kept[:, :1], -1)], dim=1)  # generated: not in the prompt
    new_state = ExtractionResult(hidden[:, None], logits, kept, mask, pos, state.groups, key_valid, cache)
    return DecodeStep(logits, hidden, new_state)


__all__ = ["DecodeStep", "ExtractionOptions", "ExtractionResult", "LayerwiseLM", "TopKExtractor", "extract_decode_step",
           "extract_forward", "gather_kept", "layer_groups"]
