r"""Latent cross-modality regularizer (LCMR): soft-DTW alignment of speech tokens with their transcript.

For a sample with projected speech tokens :math:`x_1..x_L` and the LLM input embeddings :math:`y_1..y_S` of its
transcript (only the valid positions of each),

.. math::

    D_{l,s} = -\log \operatorname{softmax}_{s'}\!\big(x_l \cdot y_{s'} / \tau\big)_s,\qquad
    \mathrm{LCMR} = \operatorname{sdtw}_\gamma(D) / N,\quad N = L \text{ (default) or } L + S,

with un-normalised dot products, :math:`\tau = 0.06` and :math:`\gamma = 0.1` by default, in float32 whatever the
model's dtype (autocast is disabled inside). The batch loss is the mean over the samples that have a transcript;
the training loss is ``CE + weight * LCMR``.

Normalisation: the Lyra paper's text divides by L + S; dividing by L (the default) keeps the loss on the scale of
a per-speech-token cross-entropy: the soft-DTW path has between max(L, S) and L + S - 1 cells and, since speech
tokens outnumber transcript tokens, it is close to L cells, so R / L is roughly the mean cost of matching a speech
token to its text token (log S with no preference among the S text tokens, -> 0 when aligned), while / (L + S)
scales it down by a data-dependent factor of about L / (L + S). Choose ``normalize="L+S"`` to follow the paper's text.

Softmax over the vocabulary (an SDK extension, ``softmax="vocabulary"``): Lyra's softmax runs over the S
transcript tokens only, so a speech token merely has to be nearer its own text token than the sentence's other
tokens; a direction that separates the sentence's words satisfies it without resembling any word the LLM knows.
With the vocabulary option the cost is :math:`D_{l,s} = -\log \operatorname{softmax}_{v}(x_l \cdot e_v / \tau)_{t_s}`
over the LLM's whole input-embedding table :math:`e` (:math:`t_s` the transcript's token ids): every speech
token must look like its aligned word piece and like no other word of the vocabulary. It is a CTC-like
alignment loss without a blank (the soft-DTW path assigns every speech token to a transcript token), and it
needs no LLM forward, so a projector can be pre-aligned with it cheaply (``ce_weight: 0`` in training).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from .soft_dtw import SoftDTWInputError, soft_dtw

__all__ = ["LCMROptions", "lcmr_loss"]

_NORMALIZE = ("L", "L+S")


class LCMROptions(BaseModel):
    """Options of the LCMR loss (the defaults are the Lyra paper's)."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(0.5, ge=0, description="lambda in CE + lambda * LCMR (0.5 in the joint stage, 0 elsewhere)")
    temperature: float = Field(0.06, gt=0, description="tau of the cost's softmax over transcript tokens")
    gamma: float = Field(0.1, gt=0, description="soft-DTW smoothing")
    normalize: Literal["L", "L+S"] = Field("L", description="divide each sample's soft-DTW by L or by L + S")
    softmax: Literal["transcript", "vocabulary"] = Field(
        "transcript", description="the cost's softmax over the transcript's tokens (Lyra) or the LLM's vocabulary")


def lcmr_loss(
    speech_tokens: Tensor,
    speech_mask: Tensor,
    text_embeds: Tensor,
    text_mask: Tensor,
    has_transcript: Tensor | None = None,
    temperature: float = 0.06,
    gamma: float = 0.1,
    normalize: Literal["L", "L+S"] = "L",
    *,
    vocab_embeds: Tensor | None = None,
    text_ids: Tensor | None = None,
) -> Tensor:
    """The LCMR loss of a batch (a float32 scalar), formulas in the module docstring.

    Args:
        speech_tokens: (B, L, d) projected speech tokens.
        speech_mask: (B, L) bool, True at valid speech tokens (any pattern: they are packed to the front).
        text_embeds: (B, S, d) LLM input embeddings of each sample's transcript. Gradients flow into both
            inputs; pass ``text_embeds.detach()`` to move only the speech side.
        text_mask: (B, S) bool, True at valid transcript tokens.
        has_transcript: (B,) bool, which samples have a transcript; ``None`` = all. A sample also counts only if
            it has at least one valid speech token and one valid transcript token.
        temperature: tau > 0 of the softmax over transcript tokens.
        gamma: soft-DTW smoothing > 0.
        normalize: ``"L"`` (default) divides each sample's soft-DTW by its number of speech tokens, ``"L+S"`` by
            speech plus transcript tokens (the paper's text).
        vocab_embeds: (V, d) the LLM's input-embedding table: given, the softmax runs over the vocabulary (see
            the module docstring) and ``text_ids`` is required; ``text_embeds`` then only fixes the shapes.
        text_ids: (B, S) int64 token ids of the transcripts (valid where ``text_mask``), with ``vocab_embeds``.

    Returns:
        Scalar float32 tensor: the mean over counted samples. If no sample counts it is 0, still attached to the
        graph of ``speech_tokens`` (its gradient is zero), so every rank of a distributed step runs a backward.

    Raises:
        SoftDTWInputError: shapes, dtypes or options that do not fit.
    """
    has_transcript = _check(speech_tokens, speech_mask, text_embeds, text_mask, has_transcript)
    temperature = _positive("temperature", temperature)
    gamma = _positive("gamma", gamma)
    if normalize not in _NORMALIZE:
        raise SoftDTWInputError(f"normalize must be one of {', '.join(_NORMALIZE)}, got {normalize!r}")
    vocab = vocab_embeds is not None
    if vocab:
        _check_vocab(vocab_embeds, text_ids, text_embeds)
    keep = has_transcript & speech_mask.any(1) & text_mask.any(1)
    idx = keep.nonzero().flatten()
    if idx.numel() == 0:
        return speech_tokens.float().sum() * 0.0
    with torch.autocast(device_type=speech_tokens.device.type, enabled=False):
        x, x_mask = _pack(speech_tokens[idx].float(), speech_mask[idx])  # (N, L, d), (N, L)
        y, y_mask = _pack(text_embeds[idx].float(), text_mask[idx])  # (N, S, d), (N, S)
        len_l, len_s = x_mask.sum(1), y_mask.sum(1)
        x, y, y_mask = x[:, : int(len_l.max())], y[:, : int(len_s.max())], y_mask[:, : int(len_s.max())]
        if vocab:
            ids, _ = _pack(text_ids[idx][:, :, None], text_mask[idx])  # (N, S, 1)
            ids = ids[:, : y.shape[1], 0].long()
            cost = torch.stack([_vocab_cost(xi, vocab_embeds, ids_i, temperature) for xi, ids_i in zip(x, ids)])
        else:
            logits = torch.bmm(x, y.transpose(1, 2)) / temperature  # (N, L', S')
            logits = logits.masked_fill(~y_mask[:, None, :], float("-inf"))
            cost = -torch.log_softmax(logits, dim=-1)
        cost = cost.masked_fill(~y_mask[:, None, :], 0.0)  # finite padding; soft-DTW never reads it
        values = soft_dtw(cost, gamma, (len_l, len_s))  # (N,)
    denom = len_l if normalize == "L" else len_l + len_s
    return (values / denom.to(values.dtype)).mean()


def _vocab_cost(x: Tensor, vocab_embeds: Tensor, ids: Tensor, temperature: float) -> Tensor:
    """(L, S) cost -log softmax_v(x_l . e_v / tau) at each transcript id; padding rows and ids give finite values."""
    logits = x @ vocab_embeds.float().T / temperature  # (L, V)
    return torch.logsumexp(logits, dim=-1, keepdim=True) - logits[:, ids]


def _check_vocab(vocab_embeds: Tensor, text_ids: Tensor | None, text_embeds: Tensor) -> None:
    B, S, d = text_embeds.shape
    if not isinstance(vocab_embeds, Tensor) or vocab_embeds.ndim != 2 or vocab_embeds.shape[1] != d \
            or not vocab_embeds.is_floating_point():
        got = tuple(vocab_embeds.shape) if isinstance(vocab_embeds, Tensor) else type(vocab_embeds).__name__
        raise SoftDTWInputError(f"vocab_embeds must be a floating (V, {d}) tensor, got {got}")
    if not isinstance(text_ids, Tensor) or tuple(text_ids.shape) != (B, S) or text_ids.is_floating_point():
        got = tuple(text_ids.shape) if isinstance(text_ids, Tensor) else type(text_ids).__name__
        raise SoftDTWInputError(f"softmax over the vocabulary needs text_ids, an integer ({B}, {S}) tensor; got {got}")
    if text_ids.numel() and (int(text_ids.min()) < 0 or int(text_ids.max()) >= vocab_embeds.shape[0]):
        raise SoftDTWInputError(f"text_ids must lie in [0, {vocab_embeds.shape[0]}), the vocabulary of vocab_embeds")


def _pack(tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Valid tokens moved to the front (order kept) and padding zeroed: (N, T, d), (N, T)."""
    lengths = mask.sum(1, keepdim=True)
    prefix = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths
    if not torch.equal(prefix, mask):
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
        tokens = tokens.gather(1, order[:, :, None].expand_as(tokens))
    return torch.where(prefix[:, :, None], tokens, tokens.new_zeros(())), prefix


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SoftDTWInputError(f"{name} must be a finite float > 0, got {value!r}")
    return float(value)


def _check(speech_tokens, speech_mask, text_embeds, text_mask, has_transcript) -> Tensor:
    """Validate shapes and dtypes; returns ``has_transcript`` as a (B,) bool tensor."""
    for name, t in (("speech_tokens", speech_tokens), ("speech_mask", speech_mask), ("text_embeds", text_embeds),
                    ("text_mask", text_mask)):
        if not isinstance(t, Tensor):
            raise SoftDTWInputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if speech_tokens.ndim != 3 or text_embeds.ndim != 3:
        raise SoftDTWInputError(
            f"speech_tokens and text_embeds must be (B, L, d) and (B, S, d), got shapes {tuple(speech_tokens.shape)} "
            f"and {tuple(text_embeds.shape)}")
    if not speech_tokens.is_floating_point() or not text_embeds.is_floating_point():
        raise SoftDTWInputError(
            f"speech_tokens and text_embeds must be floating, got {speech_tokens.dtype} and {text_embeds.dtype}")
    B, L, d = speech_tokens.shape
    if text_embeds.shape[0] != B or text_embeds.shape[2] != d:
        raise SoftDTWInputError(
            f"text_embeds must be ({B}, S, {d}) to match speech_tokens {tuple(speech_tokens.shape)}, "
            f"got {tuple(text_embeds.shape)}")
    S = text_embeds.shape[1]
    for name, m, shape in (("speech_mask", speech_mask, (B, L)), ("text_mask", text_mask, (B, S))):
        if m.dtype != torch.bool or tuple(m.shape) != shape:
            raise SoftDTWInputError(f"{name} must be a bool tensor of shape {shape}, got {m.dtype} {tuple(m.shape)}")
    if has_transcript is None:
        return torch.ones(B, dtype=torch.bool, device=speech_tokens.device)
    is_tensor = isinstance(has_transcript, Tensor)
    if not is_tensor or has_transcript.dtype != torch.bool or tuple(has_transcript.shape) != (B,):
        got = f"{has_transcript.dtype} {tuple(has_transcript.shape)}" if is_tensor else type(has_transcript).__name__
        raise SoftDTWInputError(f"has_transcript must be a bool tensor of shape ({B},) or None, got {got}")
    return has_transcript.to(speech_tokens.device)
