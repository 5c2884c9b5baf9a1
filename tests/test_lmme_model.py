"""LMME wired into the model: config and per-call extraction, generation, training, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lyra_sdk import ConfigError, Lyra
from lyra_sdk.cli import run_cli
from lyra_sdk.prompt import Prompt

SPEECH = {"plugin": "whisper", "options": {"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 4,
                                          "encoder_ffn_dim": 128}}


@pytest.fixture(scope="module")
def model(tiny_config, host):
    cfg = tiny_config(speech=SPEECH)
    cfg["llm"]["options"]["config"]["num_hidden_layers"] = 4
    cfg["projectors"]["speech"] = {"plugin": "simple_mlp", "options": {"hidden_dim": 64}}
    cfg["extraction"] = {"plugin": "topk", "options": {"keep": 0.5, "gap": 1, "min_keep": 4}}
    return Lyra.from_config(cfg, host=host)


def _prompts():
    rng = np.random.default_rng(0)
    return [Prompt("<speech> what was said?", {"speech": [rng.standard_normal(16000 * 6).astype(np.float32) * .1]}),
            Prompt("and here <speech>?", {"speech": [rng.standard_normal(16000 * 3).astype(np.float32) * .1]})]


def test_keep_one_equals_no_extraction(model):
    plain = model.generate_ids(_prompts(), max_new_tokens=6, extraction=False)[1]
    full = model.generate_ids(_prompts(), max_new_tokens=6, extraction={"keep": 1.0, "gap": 1})[1]
    assert plain == full


def test_config_extraction_is_deterministic_and_changes_the_forward(model):
    assert model.config.extraction.plugin == "topk" and model.extractor.options.keep == 0.5
    a = model.generate_ids(_prompts(), max_new_tokens=6)[1]
    b = model.generate_ids(_prompts(), max_new_tokens=6)[1]
    assert a == b
    from lyra_sdk.mechanisms.extraction import LayerwiseLM, extract_forward

    batch = model.prepare(_prompts())
    with torch.no_grad():
        res = extract_forward(LayerwiseLM(model.llm), batch.inputs_embeds, batch.attention_mask,
                              model.position_ids(batch), batch.media_mask, model.extractor)
    assert res.hidden.shape[1] < batch.inputs_embeds.shape[1]  # media tokens were dropped


def test_bad_extraction_options(model):
    with pytest.raises(ConfigError, match="extraction.keep"):
        model.generate(_prompts(), max_new_tokens=2, extraction={"keep": 0.0})


def test_cli_extract_flags(capsys, tmp_path):
    import soundfile as sf

    wav = tmp_path / "s.wav"
    sf.write(wav, (np.random.default_rng(1).standard_normal(16000 * 4) * 0.1).astype(np.float32), 16000)
    from pathlib import Path

    cfg = str(Path(__file__).resolve().parents[1] / "examples" / "configs" / "tiny-speech.yaml")
    assert run_cli(["run", "-c", cfg, "--speech", str(wav), "--extract-keep", "0.5", "--extract-gap", "1",
                    "--max-new-tokens", "3"]) == 0
    assert run_cli(["run", "-c", cfg, "--speech", str(wav), "--extract-keep", "0"]) == 2
    assert "extraction.keep" in capsys.readouterr().err
