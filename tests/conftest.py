"""Shared fixtures: tiny random-weight models built once per session from the example configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "examples" / "configs"

TINY_QWEN2 = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "intermediate_size": 128, "vocab_size": 151936, "tie_word_embeddings": True,
              "max_position_embeddings": 4096}


WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree"]


def write_word_tones(d: Path, n: int) -> Path:
    """``n`` clips in ``d/audio`` of two tones in turn (0.5 s each, 0.2 s apart), each tone standing for a word
    ("red blue" etc.), listed with transcripts in ``d/train.json``; returns ``d``."""
    import json

    import soundfile as sf

    (d / "audio").mkdir()
    t = np.arange(8000) / 16000
    recs = []
    for i in range(n):
        a, b = i % 8, (i * 3 + 1) % 8
        wav = np.concatenate([0.3 * np.sin(2 * np.pi * (250 + 150 * a) * t), np.zeros(3200),
                              0.3 * np.sin(2 * np.pi * (250 + 150 * b) * t)]).astype(np.float32)
        sf.write(d / "audio" / f"{i}.wav", wav, 16000)
        text = f"{WORDS[a]} {WORDS[b]}"
        recs.append({"id": f"t{i}", "speech": f"audio/{i}.wav", "speech_asr": text, "conversations": [
            {"from": "human", "value": "<speech>\nTranscribe."}, {"from": "gpt", "value": text}]})
    (d / "train.json").write_text(json.dumps(recs))
    return d


def tiny_config(**media_encoders: dict) -> dict:
    """A tiny Qwen2 config dict; ``media_encoders`` maps modality -> encoder spec (projector mlp2x_gelu)."""
    cfg = {"name": "tiny", "llm": {"plugin": "qwen2", "options": {"tokenizer": "qwen2", "config": dict(TINY_QWEN2)}}}
    if media_encoders:
        cfg["encoders"] = media_encoders
        cfg["projectors"] = {m: {"plugin": "mlp2x_gelu"} for m in media_encoders}
    return cfg


@pytest.fixture(name="write_word_tones", scope="session")
def write_word_tones_fixture():
    """The :func:`write_word_tones` writer."""
    return write_word_tones


@pytest.fixture(name="tiny_config", scope="session")
def tiny_config_fixture():
    """The :func:`tiny_config` builder."""
    return tiny_config


@pytest.fixture(scope="session")
def host():
    from lyra_sdk.plugins import get_plugin_host

    return get_plugin_host()


@pytest.fixture(scope="session")
def text_model(host):
    from lyra_sdk import Lyra

    return Lyra.from_config(tiny_config(), host=host)


@pytest.fixture(scope="session")
def audio_model(host):
    """Tiny LLM + the example third-party encoder for speech and sound (no dependency on Whisper)."""
    from lyra_sdk import Lyra

    enc = {"plugin": "logmel-patch", "options": {"output_dim": 32, "n_mels": 16}}
    return Lyra.from_config(tiny_config(speech=enc, sound=enc), host=host)


@pytest.fixture()
def tone():
    """A function making a 16 kHz tone of a given length in seconds."""

    def make(seconds: float, freq: float = 440.0) -> np.ndarray:
        t = np.arange(int(seconds * 16000)) / 16000
        return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)

    return make
