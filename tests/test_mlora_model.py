"""MLoRA wired into the model: routes per input, adapters off = base model, projector swap, merged export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lyra_sdk import Lyra, LyraError, Modality
from lyra_sdk.cli import run_cli
from lyra_sdk.prompt import Prompt

SPEECH = {"plugin": "whisper", "options": {"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 4,
                                          "encoder_ffn_dim": 128}}
LORA = {"adapters": {"speech": {"r": 4, "alpha": 8}, "long_speech": {"r": 8, "alpha": 16}}}


@pytest.fixture(scope="module")
def pair(tiny_config, host):
    cfg = tiny_config(speech=SPEECH)
    cfg["projectors"]["speech"] = {"plugin": "simple_mlp", "options": {"hidden_dim": 64}}
    base = Lyra.from_config(cfg, host=host)
    cfg["lora"] = LORA
    lora = Lyra.from_config(cfg, host=host)
    torch.manual_seed(0)
    with torch.no_grad():  # give the adapters and their projectors non-trivial weights
        for n, p in lora.named_parameters():
            if "lora_B" in n or n.startswith("lora.projectors."):
                p.add_(torch.randn_like(p) * 0.05)
    return base, lora


def _logits(model, prompts, route="auto"):
    with torch.no_grad():
        return model(model.prepare(prompts, route=route))[0].logits


def test_route_per_input(pair):
    _, m = pair
    short, long = np.zeros(16000 * 3, np.float32), np.zeros(16000 * 45, np.float32)
    m.prepare([Prompt("hi")])
    assert m.lora.active is None
    m.prepare([Prompt("<speech>", {"speech": [short]})])
    assert m.lora.active == "speech"
    m.prepare([Prompt("<speech>", {"speech": [long]})])
    assert m.lora.active == "long_speech"
    m.prepare([Prompt("<speech><speech>", {"speech": [short, short]})])
    assert m.lora.active == "long_speech"
    with pytest.raises(LyraError, match="mixes LoRA routes"):
        m.prepare([Prompt("hi"), Prompt("<speech>", {"speech": [short]})])
    m.prepare([Prompt("hi"), Prompt("<speech>", {"speech": [short]})], route="speech")  # forced: allowed
    assert m.lora.active == "speech"


def test_adapters_off_equals_base_and_speech_route_differs(pair):
    base, m = pair
    text = [Prompt("hello there")]
    assert torch.equal(_logits(base, text), _logits(m, text))
    clip = np.random.default_rng(0).standard_normal(16000 * 2).astype(np.float32) * 0.1
    sp = [Prompt("<speech> what?", {"speech": [clip]})]
    assert torch.equal(_logits(base, sp), _logits(m, sp, route=None))
    assert not torch.allclose(_logits(base, sp), _logits(m, sp))
    # the speech route swaps the projector with the adapter
    assert m.projector(Modality.SPEECH) is m.lora.projector(Modality.SPEECH, "speech")


def test_export_merged_equals_unmerged(pair, tmp_path):
    _, m = pair
    clip = np.random.default_rng(1).standard_normal(16000 * 2).astype(np.float32) * 0.1
    sp = [Prompt("<speech> what?", {"speech": [clip]})]
    want = _logits(m, sp, route="speech")
    m.export_merged("speech", tmp_path / "merged")
    plain = Lyra.from_pretrained(tmp_path / "merged")
    assert plain.lora is None
    torch.testing.assert_close(_logits(plain, sp), want, rtol=0, atol=1e-5)


def test_save_load_keeps_adapters(pair, tmp_path):
    _, m = pair
    m.save_pretrained(tmp_path / "m")
    again = Lyra.from_pretrained(tmp_path / "m")
    clip = np.random.default_rng(2).standard_normal(16000).astype(np.float32) * 0.1
    sp = [Prompt("<speech> what?", {"speech": [clip]})]
    assert torch.equal(_logits(m, sp), _logits(again, sp))


def test_export_cli_errors(capsys, tmp_path):
    assert run_cli(["export", "--merge", "speech", str(tmp_path / "o")]) == 2
    assert "--model" in capsys.readouterr().err
