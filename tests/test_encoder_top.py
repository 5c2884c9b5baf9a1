"""``trainable: top``: an encoder's last blocks train, its frozen stem is cached, saves keep only the top."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lyra_sdk import CheckpointError, ConfigError, Lyra
from lyra_sdk.training import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY_SPEECH = ROOT / "examples" / "configs" / "tiny-speech.yaml"
TOP1 = ["encoders.speech.trainable=top", "encoders.speech.top_layers=1"]


def test_top_trains_only_the_last_blocks_and_the_final_norm():
    model = Lyra.from_config(TINY_SPEECH, TOP1)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith(("encoders.speech.encoder.layers.1.", "encoders.speech.encoder.layer_norm."))
                           for n in trained), sorted(trained)
    assert len(trained) == len([n for n, _ in model.encoders["speech"].encoder.layers[1].named_parameters()]) + 2


@pytest.mark.parametrize("overrides, match", [
    (["encoders.speech.trainable=top"], "trainable: top needs top_layers"),
    (["encoders.speech.top_layers=1"], "top_layers is only read with trainable: top"),
    (["encoders.speech.trainable=top", "encoders.speech.top_layers=3"], "top_layers must be 1..2"),
    (["projectors.speech.trainable=top", "projectors.speech.top_layers=1"], "trainable: top is for encoders"),
])
def test_bad_top_settings_are_named(overrides, match):
    with pytest.raises(ConfigError, match=match):
        Lyra.from_config(TINY_SPEECH, overrides)


def test_an_encoder_without_a_split_refuses_top(tiny_config, host):
    cfg = tiny_config(speech={"plugin": "logmel-patch", "options": {"output_dim": 32, "n_mels": 16},
                              "trainable": "top", "top_layers": 1})
    with pytest.raises(ConfigError, match="cannot train only its last blocks"):
        Lyra.from_config(cfg, host=host)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, write_word_tones):
    return write_word_tones(tmp_path_factory.mktemp("top"), 8)


def _train(clips: Path, out: Path, cache: Path | None) -> Trainer:
    data = {"train": str(clips / "train.json")}
    if cache is not None:
        data |= {"encoder_cache_dir": str(cache), "encoder_cache_mb": 0}
    cfg = TrainConfig.from_dict({
        "stage": "top", "model": {"config": str(TINY_SPEECH), "overrides": TOP1 + ["projectors.speech.trainable=full"]},
        "data": data, "optim": {"lr": 1e-2, "max_steps": 4, "batch_size": 4, "warmup_steps": 1},
        "loss": {"ce_weight": 1.0, "asr_ctc_weight": 1.0}, "run": {"output_dir": str(out), "seed": 0}})
    trainer = Trainer(cfg, out)
    trainer.train()
    return trainer


def test_training_the_top_over_a_cached_stem_equals_training_without_a_cache(clips, tmp_path):
    plain = _train(clips, tmp_path / "plain", None)
    before = Lyra.from_config(TINY_SPEECH).state_dict()
    after = plain.lyra.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    enc = {k for k in changed if k.startswith("encoders.")}
    assert enc and all(k.startswith(("encoders.speech.encoder.layers.1.", "encoders.speech.encoder.layer_norm."))
                       for k in enc), sorted(enc)
    assert any(k.startswith("projectors.") for k in changed)
    # the same run over the disk cache: first the stems are written (one file per clip), then a second run
    # reads them (the stem never runs) and trains to the same weights
    cache = tmp_path / "cache"
    first = _train(clips, tmp_path / "c1", cache)
    assert len(list(cache.glob("*.safetensors"))) == 8
    stem_calls = []
    import lyra_whisper.plugin as wp

    orig = wp.WhisperEncoder.forward_stem

    def counting(self, *a, **k):
        stem_calls.append(1)
        return orig(self, *a, **k)

    wp.WhisperEncoder.forward_stem = counting
    try:
        second = _train(clips, tmp_path / "c2", cache)
    finally:
        wp.WhisperEncoder.forward_stem = orig
    assert not stem_calls, "a cached stem ran again"
    assert second.lyra.encoder_cache.disk_hits >= 8
    for run in (first, second):
        got = run.lyra.state_dict()
        for k in changed:
            torch.testing.assert_close(got[k], after[k], rtol=1e-4, atol=1e-5)  # row order of batched matmuls
    # the whole-encoder cache (a frozen encoder) and the stem cache never answer for each other
    frozen = Lyra.from_config(TINY_SPEECH)
    from lyra_sdk.encoder_cache import EncoderCache

    c = EncoderCache(0, cache)
    key = EncoderCache.key("speech", str(clips / "audio" / "0.wav"))
    assert c.get(key, frozen.encoders["speech"]) is None and c.get(key, frozen.encoders["speech"], 1) is not None


def _hf_whisper(folder: Path) -> Path:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(num_mel_bins=80, vocab_size=128, d_model=64, encoder_layers=2, encoder_attention_heads=4,
                        encoder_ffn_dim=128, decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=128,
                        max_source_positions=1500, max_target_positions=32, pad_token_id=1, bos_token_id=2,
                        eos_token_id=3, decoder_start_token_id=2)
    WhisperForConditionalGeneration(cfg).save_pretrained(folder)
    return folder


def test_reference_save_keeps_the_trained_top_only(tmp_path):
    src = _hf_whisper(tmp_path / "whisper")
    model = Lyra.from_config(TINY_SPEECH, TOP1 + [f"encoders.speech.options.path={src}"])
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.encoders["speech"].parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    folder = model.save_pretrained(tmp_path / "saved", reference_sources=True)
    saved = load_file(str(folder / "model.safetensors"))
    enc = sorted(k for k in saved if k.startswith("encoders."))
    assert enc and all(k.startswith(("encoders.speech.encoder.layers.1.", "encoders.speech.encoder.layer_norm."))
                       for k in enc), enc
    loaded = Lyra.from_pretrained(folder)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)
    # loaded frozen (an override), the trained top still comes from the file, not from the source
    frozen = Lyra.from_pretrained(folder, overrides=["encoders.speech.trainable=frozen",
                                                     "encoders.speech.top_layers=null"])
    k = "encoders.speech.encoder.layer_norm.weight"
    assert torch.equal(frozen.state_dict()[k], model.state_dict()[k])
    # an option set later (here by an override on a self-contained copy) survives the reference save
    whole = model.save_pretrained(tmp_path / "whole")
    again = Lyra.from_pretrained(whole, overrides=["encoders.speech.options.crop_from_layer=1"])
    ref = json.loads((again.save_pretrained(tmp_path / "ref", reference_sources=True) / "lyra_config.json").read_text())
    opts = ref["encoders"]["speech"]["options"]
    assert opts["crop_from_layer"] == 1 and opts["path"] == str(src) and opts["d_model"] == 64
    # a file that lost its top weights is refused, naming them
    meta = {"format": "pt", "lyra_referenced": json.dumps(["encoders.speech", "llm"]),
            "lyra_top_layers": json.dumps({"encoders.speech": 1})}
    save_file({k: v for k, v in saved.items() if "layer_norm" not in k}, str(folder / "model.safetensors"), meta)
    with pytest.raises(CheckpointError, match="layer_norm"):
        Lyra.from_pretrained(folder)
