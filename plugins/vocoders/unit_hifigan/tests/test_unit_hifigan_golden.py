"""Parity with fairseq: the golden fixtures (scripts/make_golden.py) hold fairseq's own outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lyra_unit_hifigan.checkpoint import load_fairseq, load_safetensors, read_fairseq_state_dict, save_safetensors
from lyra_unit_hifigan.plugin import UnitHifiGanVocoder

GOLDEN = Path(__file__).parent / "golden"
VARIANTS = ["dur", "multispkr", "f0"]
ATOL = 1e-6  # measured: 0.0 (bit-exact) on torch 2.13 CPU


def golden(name: str) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    return GOLDEN / f"{name}.pt", GOLDEN / f"{name}.config.json", load_file(GOLDEN / f"{name}.expected.safetensors")


def conditions(exp: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    kw = {}
    if "spkr" in exp:
        kw["spkr"] = exp["spkr"]
    if "f0" in exp:
        kw["f0"] = exp["f0"][None]
    return kw


def test_golden_checkpoint_holds_weight_norm_pairs_and_only_tensors():
    sd = read_fairseq_state_dict(GOLDEN / "dur.pt")  # weights_only=True inside
    assert "conv_pre.weight_g" in sd and "resblocks.0.convs1.0.weight_v" in sd and "dur_predictor.conv1.0.weight" in sd


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("fold", [False, True])
def test_matches_fairseq(name, fold):
    ckpt, cfg, exp = golden(name)
    model = load_fairseq(ckpt, cfg)
    if fold:
        model.remove_weight_norm()
        assert not any(k.endswith("weight_g") for k in model.state_dict())
    with torch.no_grad():
        wav, lengths = model(exp["units"][None], **conditions(exp))
    assert wav.shape == (1, exp["wav"].numel()) and lengths.tolist() == [exp["wav"].numel()]
    torch.testing.assert_close(wav[0], exp["wav"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["dur", "multispkr"])
def test_duration_prediction_matches_fairseq(name):
    ckpt, cfg, exp = golden(name)
    model = load_fairseq(ckpt, cfg).remove_weight_norm()
    with torch.no_grad():
        dur = model.predict_durations(exp["units"][None])[0]
        wav, _ = model(exp["units"][None], dur_prediction=True, **conditions(exp))
    assert dur.tolist() == exp["durations"].tolist()
    assert wav.shape[1] == int(exp["durations"].sum()) * model.hop_length
    torch.testing.assert_close(wav[0], exp["wav_dur"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", VARIANTS)
def test_safetensors_roundtrip(name, tmp_path):
    ckpt, cfg, exp = golden(name)
    model = load_fairseq(ckpt, cfg).remove_weight_norm()
    save_safetensors(model, tmp_path / "v.safetensors")
    again = load_safetensors(tmp_path / "v.safetensors")  # config comes from the file's metadata
    assert again.cfg == model.cfg
    with torch.no_grad():
        torch.testing.assert_close(again(exp["units"][None], **conditions(exp))[0][0], exp["wav"], atol=ATOL, rtol=0)


def test_plugin_from_fairseq_files_matches_fairseq():
    ckpt, cfg, exp = golden("multispkr")
    voc = UnitHifiGanVocoder.from_options(UnitHifiGanVocoder.Options(
        checkpoint=str(ckpt), config=str(cfg), speaker=int(exp["spkr"]), dur_prediction=True))
    assert voc.sample_rate == 16000 and voc.num_units == 50
    torch.testing.assert_close(voc.synthesize(exp["units"].tolist()), exp["wav_dur"], atol=ATOL, rtol=0)
    torch.testing.assert_close(voc.synthesize(exp["units"].tolist(), dur_prediction=False), exp["wav"],
                               atol=ATOL, rtol=0)
