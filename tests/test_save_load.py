"""save_pretrained / from_pretrained: an exact round trip, and clear errors for broken folders."""

from __future__ import annotations

import json

import pytest
import torch

from lyra_sdk import CheckpointError, Lyra
from lyra_sdk.prompt import Prompt


def test_round_trip_bit_identical(audio_model, tone, tmp_path):
    audio_model.save_pretrained(tmp_path / "m")
    again = Lyra.from_pretrained(tmp_path / "m")
    p = [Prompt("<speech> what was said?", {"speech": [tone(1.2)]})]
    with torch.no_grad():
        a = audio_model(audio_model.prepare(p))[0].logits
        b = again(again.prepare(p))[0].logits
    assert torch.equal(a, b)
    sa, sb = audio_model.state_dict(), again.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    saved = json.loads((tmp_path / "m" / "lyra_config.json").read_text())
    assert saved["projectors"]["speech"]["options"]["in_dim"] == 32  # inferred widths are written down


def test_missing_and_truncated(text_model, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        Lyra.from_pretrained(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="lyra_config.json is missing"):
        Lyra.from_pretrained(tmp_path / "empty")
    out = text_model.save_pretrained(tmp_path / "t")
    w = out / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot read"):
        Lyra.from_pretrained(out)


def test_config_and_weights_disagree(text_model, tmp_path):
    out = text_model.save_pretrained(tmp_path / "t")
    cfg = json.loads((out / "lyra_config.json").read_text())
    cfg["llm"]["options"]["config"]["num_hidden_layers"] = 3
    cfg["llm"]["options"]["config"].pop("layer_types", None)
    (out / "lyra_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not match"):
        Lyra.from_pretrained(out)
