"""Back-of-the-envelope sizes for long speech: windows, tokens and memory, computed before anything runs.

Shapes come from the model built on the meta device (no weights allocated), so the numbers follow the config:
window length and frames from the encoder, token compression from the projector, KV-cache and activation
sizes from the LLM's transformers config.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .errors import LyraError

_BYTES = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2}


@dataclass
class SpeechEstimate:
    """Sizes for one recording of ``seconds`` seconds (bytes unless stated)."""

    seconds: float
    windows: int
    speech_tokens: int
    weights: int
    token_embeddings: int
    kv_cache: int
    prefill_activations: int
    encoder_batch: int
    total: int

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        return asdict(self)


def estimate_speech(model: Any, seconds: float, prompt_tokens: int = 64, new_tokens: int = 256) -> SpeechEstimate:
    """Estimate speech tokens and peak inference memory of ``model`` (build it with ``device="meta"``)."""
    if seconds <= 0:
        raise LyraError(f"speech length must be positive, got {seconds} s")
    if "speech" not in model.encoders:
        raise LyraError("this model has no speech encoder")
    enc, proj = model.encoders["speech"], model.projectors["speech"]
    window = enc.window_seconds or seconds
    windows = max(1, math.ceil(seconds / window - 1e-9))
    full = enc.featurize([np.zeros(int(round(min(window, seconds) * 16000)), dtype=np.float32)])
    dev = next(enc.parameters()).device
    out = proj(enc(full.to(dev)))  # shapes only, on meta
    frames = int(enc(full.to(dev)).embeddings.shape[1])
    ratio = out.embeddings.shape[1] / frames  # projector compression (1/5 for simple_mlp)
    per_full = out.embeddings.shape[1]
    rest = seconds - (windows - 1) * window
    rest_frames = (full.valid_lengths or [frames])[0] if windows == 1 else min(frames, math.ceil(rest * 16000 / 320))
    tokens = (windows - 1) * per_full + math.ceil(rest_frames * ratio)
    bpe = _BYTES.get(next(model.llm.parameters()).dtype, 4)
    weights = sum(p.numel() * _BYTES.get(p.dtype, 4) for p in model.parameters())
    cfg = getattr(getattr(model.llm, "model", None), "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    hidden = model.llm.hidden_size
    seq = tokens + prompt_tokens + new_tokens
    if cfg is not None and hasattr(cfg, "num_hidden_layers"):
        heads = cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", heads) or heads
        head_dim = getattr(cfg, "head_dim", None) or hidden // heads
        kv = 2 * cfg.num_hidden_layers * kv_heads * head_dim * seq * bpe
        act = seq * (4 * hidden + 3 * getattr(cfg, "intermediate_size", 4 * hidden)) * bpe
    else:
        kv = act = 0
    enc_batch = getattr(getattr(enc, "options", None), "max_batch_windows", 1)
    enc_act = enc_batch * frames * 6 * enc.output_dim * bpe + enc_batch * 480000 * 4 * 6
    emb = tokens * hidden * bpe
    return SpeechEstimate(seconds, windows, tokens, weights, emb, kv, act, enc_act,
                          weights + emb + kv + act + enc_act)


def gib(n: int) -> str:
    """Bytes as GiB with two decimals."""
    return f"{n / 2**30:.2f} GiB"


__all__ = ["SpeechEstimate", "estimate_speech", "gib"]
