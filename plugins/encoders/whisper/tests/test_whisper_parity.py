"""Our encoder against the reference implementations, with the same weights: transformers and openai-whisper."""

from __future__ import annotations

import pytest
import torch

from lyra_whisper.convert import load_checkpoint, load_strict
from lyra_whisper.model import WhisperEncoderModel
from lyra_whisper.plugin import WhisperEncoder

ATOL = 1e-5  # fp32; measured max |diff| is ~1e-6 (HF) and 0 to ~1e-6 (openai-whisper)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_matches_transformers_whisper_encoder(n_mels, hf_whisper_config, mel_batch, perturb):
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

    torch.manual_seed(0)
    config = hf_whisper_config(n_mels)
    config._attn_implementation = "eager"  # the plainest reference path
    ref = HFWhisperEncoder(config).eval()
    perturb(ref, seed=1)
    ours = WhisperEncoderModel(_config_from_hf(config)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    mel = mel_batch(1, n_mels)
    with torch.no_grad():
        expected = ref(mel).last_hidden_state  # (2, 1500, 64)
        got = ours(mel)
    assert got.shape == expected.shape == (1, 1500, 64)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def _config_from_hf(config):
    from lyra_whisper.model import WhisperEncoderConfig

    return WhisperEncoderConfig(**{k: getattr(config, k) for k in WhisperEncoderConfig.__dataclass_fields__})


def _openai_model(n_mels: int, perturb):
    whisper_model = pytest.importorskip("whisper.model")
    dims = whisper_model.ModelDimensions(
        n_mels=n_mels, n_audio_ctx=1500, n_audio_state=64, n_audio_head=4, n_audio_layer=2,
        n_vocab=100, n_text_ctx=16, n_text_state=64, n_text_head=4, n_text_layer=1,
    )
    torch.manual_seed(0)
    model = whisper_model.Whisper(dims).eval()
    perturb(model, seed=2)
    return model, dims


@pytest.mark.parametrize("n_mels", [80, 128])
def test_openai_checkpoint_through_plugin(n_mels, tmp_path, mel_batch, perturb):
    from dataclasses import asdict

    model, dims = _openai_model(n_mels, perturb)
    path = tmp_path / "tiny.pt"
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, path)
    encoder = WhisperEncoder.from_options(WhisperEncoder.Options(path=str(path))).eval()
    assert encoder.config.num_mel_bins == n_mels and encoder.output_dim == 64
    mel = mel_batch(1, n_mels, seed=3)
    with torch.no_grad():
        expected = model.embed_audio(mel)
        got = encoder.encoder(mel)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["conditional_generation", "whisper_model", "pytorch_bin"])
def test_hf_folder_layouts(kind, tmp_path, hf_whisper_config, mel_batch, perturb):
    from transformers import WhisperForConditionalGeneration, WhisperModel

    torch.manual_seed(0)
    config = hf_whisper_config(80)
    model = (WhisperModel if kind == "whisper_model" else WhisperForConditionalGeneration)(config).eval()
    perturb(model, seed=4)
    model.save_pretrained(tmp_path)
    if kind == "pytorch_bin":
        (tmp_path / "model.safetensors").unlink()
        torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    cfg, sd, fmt = load_checkpoint(tmp_path)
    assert fmt == "hf" and cfg == _config_from_hf(config)
    ours = WhisperEncoderModel(cfg).eval()
    load_strict(ours, sd, "test")
    mel = mel_batch(1, 80, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(ours(mel), model.get_encoder()(mel).last_hidden_state, atol=ATOL, rtol=0)
