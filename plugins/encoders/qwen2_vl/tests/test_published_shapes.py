"""``examples/configs/lyra-{mini,base}.yaml`` have the published shapes: built on the meta device (no memory), the
Qwen2-VL part has exactly the parameter count of Qwen2-VL-2B / 7B-Instruct (2,208,985,600 / 8,291,375,616), and
with the Whisper large-v3(-turbo) encoder and the speech projector the totals are about 2.9B and 8.9B."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lyra_sdk import Lyra

CONFIGS = Path(__file__).resolve().parents[4] / "examples" / "configs"
SHAPES = {
    # name: (Qwen2-VL params, LLM hidden, layers, heads, kv heads, vocab, tied, total)
    "lyra-mini": (2_208_985_600, 1536, 28, 12, 2, 151936, True, 2_862_211_072),
    "lyra-base": (8_291_375_616, 3584, 28, 28, 4, 152064, False, 8_948_797_440),
}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # shared (tied) tensors count once


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_published_shapes_on_meta(name):
    qwen2vl, hidden, layers, heads, kv_heads, vocab, tied, total = SHAPES[name]
    with torch.device("meta"):
        model = Lyra.from_config(CONFIGS / f"{name}.yaml")
    assert next(model.parameters()).device.type == "meta" and model.llm.dtype == torch.bfloat16
    text = model.llm.model.config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads,
            text.vocab_size) == (hidden, layers, heads, kv_heads, vocab)
    assert text.rope_parameters["mrope_section"] == [16, 24, 24]
    assert (model.llm.model.lm_head.weight is model.llm.model.model.embed_tokens.weight) == tied
    vision = model.encoders["image"].visual.config
    assert (vision.depth, vision.embed_dim, vision.num_heads, vision.hidden_size) == (32, 1280, 16, hidden)
    whisper = model.encoders["speech"].config
    assert (whisper.num_mel_bins, whisper.d_model, whisper.encoder_layers, whisper.encoder_attention_heads,
            whisper.encoder_ffn_dim) == (128, 1280, 32, 20, 5120)
    assert model.projectors["speech"].linear1.in_features == 6400
    assert _count(model.llm) + _count(model.encoders["image"]) == qwen2vl
    assert _count(model) == total
