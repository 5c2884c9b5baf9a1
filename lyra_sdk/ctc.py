"""Lyra's CTC speech-unit generator: LLM hidden states -> discrete speech units, exactly streamable.

``Linear(llm_hidden, d) -> N causal Qwen2 decoder layers -> Linear(d, units + 1)`` over the answer's hidden
states, each repeated ``upsample_factor`` times (position t of the upsampled sequence takes hidden state
``floor(t * n_src / n_up)`` = ``t // factor``), with rotary positions 0..T-1. The layers attend causally, so a
KV cache makes an incremental run exactly equal to the offline one: :class:`CtcUnitStream` pushes new hidden
states as text tokens are generated and returns the units that became final.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Self

import torch
from pydantic import Field
from torch import Tensor, nn

from .errors import LyraError
from .interfaces import PluginOptions, SpeechDecoder, UnitStream

PRESETS = {"lyra": {"num_layers": 2, "hidden_size": 4096, "num_heads": 32, "ffn_size": 11008}}
"""Named sizes; ``lyra`` is the original ctc_decoder_config ``(2,4096,32,11008)``."""


class CtcOptions(PluginOptions):
    """Options of the ``ctc`` speech decoder. ``llm_hidden_size`` is inferred from the LLM when unset."""

    preset: Literal["lyra"] | None = Field(None, description="named sizes; explicit fields below override it")
    llm_hidden_size: int | None = Field(None, gt=0)
    num_layers: int = Field(2, gt=0)
    hidden_size: int = Field(256, gt=0)
    num_heads: int = Field(4, gt=0)
    ffn_size: int = Field(512, gt=0)
    unit_vocab_size: int = Field(1000, gt=0, description="discrete units; the blank is index unit_vocab_size")
    upsample_factor: int = Field(25, gt=0)
    rope_theta: float = Field(1_000_000.0, gt=0, description="the LLM's rotary base (1e6 for Qwen2-VL)")
    rms_norm_eps: float = Field(1e-6, gt=0)


class CtcSpeechDecoder(SpeechDecoder):
    """The ``ctc`` speech decoder (state-dict names match Lyra's ``speech_generator.*``)."""

    Options = CtcOptions

    def __init__(self, options: CtcOptions) -> None:
        from transformers import Qwen2Config
        from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer, Qwen2RotaryEmbedding

        super().__init__()
        if options.llm_hidden_size is None:
            raise LyraError("ctc: llm_hidden_size is not set (Lyra.from_config infers it from the LLM)")
        if options.hidden_size % options.num_heads:
            raise LyraError(f"ctc: hidden_size {options.hidden_size} is not divisible by num_heads {options.num_heads}")
        self.options = options
        self.unit_vocab_size = options.unit_vocab_size
        self.blank = options.unit_vocab_size
        self.factor = options.upsample_factor
        cfg = Qwen2Config(hidden_size=options.hidden_size, num_attention_heads=options.num_heads,
                          num_key_value_heads=options.num_heads, intermediate_size=options.ffn_size,
                          num_hidden_layers=options.num_layers, rope_theta=options.rope_theta,
                          rms_norm_eps=options.rms_norm_eps, vocab_size=options.unit_vocab_size + 1,
                          max_position_embeddings=32768)
        cfg._attn_implementation = "sdpa"
        self.layer_config = cfg
        self.input_proj = nn.Linear(options.llm_hidden_size, options.hidden_size)
        self.layers = nn.ModuleList([Qwen2DecoderLayer(cfg, i) for i in range(options.num_layers)])
        self.output_proj = nn.Linear(options.hidden_size, options.unit_vocab_size + 1)
        self.rotary_emb = Qwen2RotaryEmbedding(config=cfg)

    @classmethod
    def from_options(cls, options: CtcOptions) -> Self:
        """Random weights; a preset fills the sizes it names unless set explicitly."""
        if options.preset is not None:
            explicit = options.model_fields_set
            options = options.model_copy(update={k: v for k, v in PRESETS[options.preset].items() if k not in explicit})
        return cls(options)

    # ---------------------------------------------------------------- core

    def _run(self, x: Tensor, positions: Tensor, allowed: Tensor, cache=None) -> Tensor:
        """x (B, T, d), positions (B, T), allowed (B, 1, T, T_kv) bool -> logits (B, T, U+1)."""
        pos_emb = self.rotary_emb(x, positions)
        for layer in self.layers:
            x = layer(x, attention_mask=allowed, position_embeddings=pos_emb, past_key_values=cache,
                      use_cache=cache is not None)
        return self.output_proj(x)

    def upsample(self, hidden_states: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(B, L, D), (B, L) -> repeated (B, L*factor, D) with real tokens packed first, and mask (B, L*factor)."""
        bsz, length, dim = hidden_states.shape
        lengths = mask.long().sum(-1)  # (B,)
        order = torch.argsort((~mask.bool()).long(), dim=1, stable=True)  # real tokens first, order kept
        packed = torch.gather(hidden_states, 1, order[..., None].expand(-1, -1, dim))
        up = packed.repeat_interleave(self.factor, dim=1)  # (B, L*f, D)
        up_mask = torch.arange(length * self.factor, device=mask.device)[None] < (lengths * self.factor)[:, None]
        return up, up_mask

    def forward(self, hidden_states: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(B, L, D) answer hidden states + (B, L) mask -> unit logits (B, L*factor, U+1) and mask (B, L*factor)."""
        up, up_mask = self.upsample(hidden_states, mask)
        t = up.shape[1]
        x = self.input_proj(up.to(self.input_proj.weight.dtype))
        positions = torch.arange(t, device=x.device)[None].expand(x.shape[0], -1)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        allowed = causal[None, None] & up_mask[:, None, None, :]
        allowed = allowed | torch.eye(t, dtype=torch.bool, device=x.device)[None, None]  # padded rows see themselves
        return self._run(x, positions, allowed), up_mask

    @staticmethod
    def collapse(ids: Sequence[int], blank: int, previous: int | None = None) -> list[int]:
        """Greedy CTC: merge repeats (also across a chunk boundary via ``previous``), then drop blanks."""
        out = []
        for i in ids:
            if i != previous and i != blank:
                out.append(int(i))
            previous = i
        return out

    def decode(self, hidden_states: Tensor, mask: Tensor) -> list[list[int]]:
        """Greedy decoding of each row -> unit ids."""
        logits, up_mask = self(hidden_states, mask)
        best = logits.argmax(-1)
        return [self.collapse(best[b][up_mask[b]].tolist(), self.blank) for b in range(best.shape[0])]

    def loss(self, hidden_states: Tensor, mask: Tensor, targets: Sequence[Sequence[int]]) -> Tensor:
        """CTC loss (sum, zero_infinity) divided by the total target length, as in Lyra / LLaMA-Omni."""
        if len(targets) != hidden_states.shape[0]:
            raise LyraError(f"ctc loss: {len(targets)} target sequences for a batch of {hidden_states.shape[0]}")
        for b, tg in enumerate(targets):
            bad = [u for u in tg if not 0 <= u < self.unit_vocab_size]
            if bad:
                raise LyraError(f"ctc loss: target {b} has unit ids outside [0, {self.unit_vocab_size}): {bad[:5]}")
        logits, up_mask = self(hidden_states, mask)
        logp = torch.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, C)
        flat = torch.tensor([u for tg in targets for u in tg], dtype=torch.long, device=logits.device)
        tgt_len = torch.tensor([len(tg) for tg in targets], dtype=torch.long, device=logits.device)
        loss = nn.functional.ctc_loss(logp, flat, up_mask.long().sum(-1), tgt_len, blank=self.blank,
                                      reduction="sum", zero_infinity=True)
        return loss / tgt_len.sum().clamp(min=1)

    def stream(self) -> "CtcUnitStream":
        """An exact incremental decoder over one answer (batch of one)."""
        return CtcUnitStream(self)


class CtcUnitStream(UnitStream):
    """Incremental CTC decoding: each pushed hidden state adds ``factor`` positions, run through the layers with a
    KV cache; units are returned as soon as they are final (greedy CTC output never changes in hindsight)."""

    def __init__(self, decoder: CtcSpeechDecoder) -> None:
        from transformers import DynamicCache

        self.dec = decoder
        self.cache = DynamicCache(config=decoder.layer_config)
        self.seen = 0  # upsampled positions processed
        self.previous: int | None = None

    @torch.no_grad()
    def push(self, hidden_states: Tensor) -> list[int]:
        """(n, D) new hidden states -> new units."""
        if hidden_states.ndim == 1:
            hidden_states = hidden_states[None]
        if hidden_states.shape[0] == 0:
            return []
        dec = self.dec
        up = hidden_states.repeat_interleave(dec.factor, dim=0)[None]  # (1, n*f, D)
        q = up.shape[1]
        x = dec.input_proj(up.to(dec.input_proj.weight.dtype))
        positions = torch.arange(self.seen, self.seen + q, device=x.device)[None]
        kv = self.seen + q
        allowed = torch.arange(kv, device=x.device)[None, :] <= positions[0, :, None]  # (q, kv)
        logits = dec._run(x, positions, allowed[None, None], cache=self.cache)
        self.seen = kv
        ids = logits[0].argmax(-1).tolist()
        units = dec.collapse(ids, dec.blank, self.previous)
        self.previous = ids[-1]
        return units

    def flush(self) -> list[int]:
        """Nothing is held back: greedy CTC units are final when produced."""
        return []
