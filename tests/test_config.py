"""LyraConfig: strict structure, plugin-validated options, overrides, every error at once with its path."""

from __future__ import annotations

import json

import pytest

from lyra_sdk import ConfigError, LyraConfig
from lyra_sdk.config import apply_override

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"


def test_loads_yaml_and_fills_plugin_defaults(host):
    cfg = LyraConfig.load(CONFIGS / "tiny-speech.yaml", host=host)
    assert cfg.projectors["speech"].options["k"] == 5
    assert cfg.llm.options["attn_implementation"] == "sdpa"  # default from the plugin's Options
    assert cfg.base_dir == CONFIGS.resolve()


def test_json_round_trip(tmp_path, host, tiny_config):
    cfg = LyraConfig.from_dict(tiny_config(), host=host)
    cfg.save(tmp_path / "c.json")
    again = LyraConfig.load(tmp_path / "c.json", host=host)
    assert again.to_dict() == cfg.to_dict()


def test_unknown_key_refused_with_path(host, tiny_config):
    data = tiny_config()
    data["generaton"] = {}
    data["llm"]["options"]["tokenizr"] = "qwen2"
    with pytest.raises(ConfigError) as exc:
        LyraConfig.from_dict(data, host=host)
    paths = [p for p, _ in exc.value.errors]
    assert "generaton" in paths and "llm.options.tokenizr" in paths  # both reported at once


def test_all_errors_reported_at_once(host, tiny_config):
    data = tiny_config()
    data["generation"] = {"max_new_tokens": 0, "temperature": -1}
    data["encoders"] = {"speech": {"plugin": "nope"}}
    data["projectors"] = {"speech": {"plugin": "simple_mlp", "options": {"k": "five"}}}
    with pytest.raises(ConfigError) as exc:
        LyraConfig.from_dict(data, host=host)
    paths = {p for p, _ in exc.value.errors}
    assert {"generation.max_new_tokens", "generation.temperature", "encoders.speech.plugin",
            "projectors.speech.options.k"} <= paths
    assert "valid names" in str(exc.value)


def test_encoder_without_projector(host, tiny_config):
    data = tiny_config()
    data["encoders"] = {"speech": {"plugin": "logmel-patch"}}
    with pytest.raises(ConfigError, match="no projector"):
        LyraConfig.from_dict(data, host=host)


def test_dotted_overrides(host, tiny_config):
    cfg = LyraConfig.from_dict(tiny_config(), ["llm.options.config.num_hidden_layers=1",
                                               "generation.max_new_tokens=7", "generation.stop_ids=[1, 2]"], host=host)
    assert cfg.llm.options["config"]["num_hidden_layers"] == 1
    assert cfg.generation.max_new_tokens == 7 and cfg.generation.stop_ids == [1, 2]


def test_bad_overrides():
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_override({}, "no_equals_sign")
    with pytest.raises(ConfigError, match="not a mapping"):
        apply_override({"name": "x"}, "name.sub=1")


def test_file_errors(tmp_path, host):
    with pytest.raises(ConfigError, match="not found"):
        LyraConfig.load(tmp_path / "missing.yaml", host=host)
    bad = tmp_path / "bad.yaml"
    bad.write_text("llm: [unclosed")
    with pytest.raises(ConfigError, match="cannot parse"):
        LyraConfig.load(bad, host=host)
    lst = tmp_path / "list.json"
    lst.write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="mapping"):
        LyraConfig.load(lst, host=host)
