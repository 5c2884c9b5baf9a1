"""User mistakes give LyraError subclasses with messages that name the problem."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from lyra_sdk.errors import CheckpointError, ConfigError, LyraError
from lyra_unit_hifigan.api import parse_units
from lyra_unit_hifigan.checkpoint import load_fairseq, load_safetensors, save_safetensors
from lyra_unit_hifigan.model import InvalidUnitsError
from lyra_unit_hifigan.plugin import UnitHifiGanVocoder

GOLDEN = Path(__file__).parent / "golden"
CKPT, CFG = GOLDEN / "dur.pt", GOLDEN / "dur.config.json"


@pytest.fixture(scope="module")
def vocoder() -> UnitHifiGanVocoder:
    return UnitHifiGanVocoder.from_options(UnitHifiGanVocoder.Options(checkpoint=str(CKPT), config=str(CFG)))


def write_cfg(tmp_path: Path, **changes) -> Path:
    cfg = json.loads(CFG.read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    return p


def save_generator(tmp_path: Path, sd: dict, **extra) -> Path:
    p = tmp_path / "g.pt"
    torch.save({"generator": sd, **extra}, p)
    return p


@pytest.mark.parametrize("units", [[5, 100], [-1, 3], [3, 2**40]])
def test_unit_out_of_range(vocoder, units):
    with pytest.raises(InvalidUnitsError, match=r"out of range.*0\.\.99"):
        vocoder.synthesize(units)
    with pytest.raises(InvalidUnitsError, match="out of range"):
        list(vocoder.stream(iter([units])))


@pytest.mark.parametrize("units", [[], torch.zeros(0, dtype=torch.long), [[1, 2]], [1.5, 2.0], "12 3"])
def test_empty_or_malformed_units(vocoder, units):
    with pytest.raises(InvalidUnitsError):
        vocoder.synthesize(units)


def test_empty_stream(vocoder):
    with pytest.raises(InvalidUnitsError, match="empty"):
        list(vocoder.stream(iter([[], []])))


def test_errors_are_lyra_errors():
    assert issubclass(InvalidUnitsError, LyraError)


def test_config_disagrees_with_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=r"dict\.weight has shape \(100, 16\).*num_embeddings.*\(101, 16\)"):
        load_fairseq(CKPT, write_cfg(tmp_path, num_embeddings=101))
    with pytest.raises(CheckpointError, match="resblocks"):
        load_fairseq(CKPT, write_cfg(tmp_path, resblock_kernel_sizes=[3, 7, 9]))


def test_duration_predictor_presence_mismatch(tmp_path):
    with pytest.raises(CheckpointError, match="has a duration predictor.*no dur_predictor_params"):
        load_fairseq(CKPT, write_cfg(tmp_path, dur_predictor_params=None))
    sd = {k: v for k, v in torch.load(CKPT, weights_only=True)["generator"].items() if "dur_predictor" not in k}
    with pytest.raises(CheckpointError, match="no duration predictor"):
        load_fairseq(save_generator(tmp_path, sd), CFG)


def test_unexpected_and_missing_keys(tmp_path):
    sd = dict(torch.load(CKPT, weights_only=True)["generator"])
    with pytest.raises(CheckpointError, match="unexpected key 'extra.weight'"):
        load_fairseq(save_generator(tmp_path, {**sd, "extra.weight": torch.zeros(1)}), CFG)
    sd.pop("conv_post.bias")
    with pytest.raises(CheckpointError, match="missing key 'conv_post.bias'"):
        load_fairseq(save_generator(tmp_path, sd), CFG)


def test_truncated_checkpoint(tmp_path):
    data = CKPT.read_bytes()
    for cut in (len(data) // 2, 100, 0):
        p = tmp_path / f"cut{cut}.pt"
        p.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load_fairseq(p, CFG)


def test_truncated_safetensors(tmp_path):
    p = tmp_path / "v.safetensors"
    save_safetensors(load_fairseq(CKPT, CFG), p)
    p.write_bytes(p.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_safetensors(p)


def test_pickled_objects_are_refused(tmp_path):
    sd = torch.load(CKPT, weights_only=True)["generator"]
    with pytest.raises(CheckpointError, match="objects other than tensors"):
        load_fairseq(save_generator(tmp_path, sd, args=argparse.Namespace(lr=1)), CFG)


def test_missing_files_and_bad_config(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_fairseq(tmp_path / "nope.pt", CFG)
    with pytest.raises(CheckpointError, match="not found"):
        load_fairseq(CKPT, tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_fairseq(CKPT, bad)
    with pytest.raises(ConfigError, match="model_in_dim"):
        load_fairseq(CKPT, write_cfg(tmp_path, model_in_dim=20))
    torch.save({"model": {}}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="'generator' key"):
        load_fairseq(tmp_path / "x.pt", CFG)


def test_option_errors():
    with pytest.raises(ConfigError, match="num_embeddings"):  # explicit option contradicts config.json
        UnitHifiGanVocoder.from_options(UnitHifiGanVocoder.Options(checkpoint=str(CKPT), config=str(CFG),
                                                                   num_embeddings=1000))
    with pytest.raises(ConfigError, match="dur_prediction"):
        UnitHifiGanVocoder.from_options(UnitHifiGanVocoder.Options(
            checkpoint=str(GOLDEN / "f0.pt"), config=str(GOLDEN / "f0.config.json"), dur_prediction=True))
    with pytest.raises(ValueError):  # pydantic: unknown option
        UnitHifiGanVocoder.Options(checkpont="x")


def test_multispeaker_needs_a_speaker():
    voc = UnitHifiGanVocoder.from_options(UnitHifiGanVocoder.Options(
        checkpoint=str(GOLDEN / "multispkr.pt"), config=str(GOLDEN / "multispkr.config.json")))
    with pytest.raises(InvalidUnitsError, match="speaker"):
        voc.synthesize([1, 2, 3])
    with pytest.raises(InvalidUnitsError, match="speaker id"):
        voc.synthesize([1, 2, 3], speaker=4)


@pytest.mark.parametrize("text", ["", "  ", "12 a 3", "<12><x>", "<1>2", "1.5 2"])
def test_parse_units_refuses(text):
    with pytest.raises(InvalidUnitsError):
        parse_units(text)
