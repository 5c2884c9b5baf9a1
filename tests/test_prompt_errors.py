"""Bad input gets a clear error naming the problem."""

from __future__ import annotations

import pytest

from lyra_sdk import ConfigError, Lyra, MediaError, PromptError
from lyra_sdk.prompt import Prompt


def test_placeholder_without_media(audio_model):
    with pytest.raises(PromptError, match=r"<speech> placeholder\(s\) but no speech"):
        audio_model.prepare([Prompt("what is said in <speech>?")])


def test_media_without_placeholder(audio_model, tone):
    with pytest.raises(PromptError, match="no <speech> placeholder"):
        audio_model.prepare([Prompt("what is said?", {"speech": [tone(1.0)]})])


def test_count_mismatch_and_missing_encoder(audio_model, text_model, tone):
    with pytest.raises(PromptError, match="2 <speech> placeholder"):
        audio_model.prepare([Prompt("<speech> <speech>", {"speech": [tone(1.0)] * 3})])
    with pytest.raises(PromptError, match="no speech encoder"):
        text_model.prepare([Prompt("<speech>", {"speech": [tone(1.0)]})])
    with pytest.raises(PromptError, match="unknown modality"):
        audio_model.prepare([Prompt("<speech>", {"smell": [1]})])


def test_unknown_plugin(host, tiny_config):
    cfg = tiny_config()
    cfg["llm"]["plugin"] = "qwen9"
    with pytest.raises(ConfigError, match="unknown llm plugin 'qwen9'"):
        Lyra.from_config(cfg, host=host)


def test_bad_audio_files(audio_model, tmp_path):
    missing = tmp_path / "nope.wav"
    with pytest.raises(MediaError, match="not found|does not exist|no such"):
        audio_model.prepare([Prompt("<speech>", {"speech": [str(missing)]})])
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        audio_model.prepare([Prompt("<speech>", {"speech": [str(empty)]})])
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00garbage" * 50)
    with pytest.raises(MediaError):
        audio_model.prepare([Prompt("<speech>", {"speech": [str(junk)]})])
