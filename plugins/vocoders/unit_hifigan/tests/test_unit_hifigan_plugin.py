"""The plugin as the SDK sees it: discovery, options, saved options, the api functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lyra_sdk.interfaces import ComponentKind, Vocoder
from lyra_sdk.plugins import get_plugin_host
from lyra_unit_hifigan.api import parse_units, vocode_units
from lyra_unit_hifigan.config import HifiGanConfig
from lyra_unit_hifigan.plugin import UnitHifiGanVocoder

GOLDEN = Path(__file__).parent / "golden"
TINY = {"upsample_rates": [4, 2], "upsample_kernel_sizes": [8, 4], "upsample_initial_channel": 8,
        "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]], "num_embeddings": 10,
        "embedding_dim": 4, "model_in_dim": 4, "dur_predictor_params": None}


def test_discovered_through_entry_point():
    entry = get_plugin_host().get(ComponentKind.VOCODER, "unit-hifigan")
    assert entry.cls is UnitHifiGanVocoder and entry.package == "lyra-unit-hifigan"
    voc = get_plugin_host().build("vocoder", "unit-hifigan", TINY)  # random weights, inline architecture
    assert isinstance(voc, Vocoder) and voc.hop_length == 8 and voc.num_units == 10
    assert voc.synthesize([1, 2, 3]).shape == (24,)
    assert not any(k.endswith("weight_g") for k in voc.state_dict())  # weight norm folded at build


def test_default_options_are_the_lyra_vocoder():
    cfg = HifiGanConfig.model_validate(UnitHifiGanVocoder.Options().model_dump(include=set(HifiGanConfig.model_fields)))
    assert cfg.hop_length == 320 and cfg.num_embeddings == 1000 and cfg.sampling_rate == 16000
    assert cfg.dur_predictor_params is not None and cfg.dur_predictor_params.encoder_embed_dim == 128
    assert cfg.validate_arch() == []


def test_saved_options_rebuild_the_architecture():
    voc = UnitHifiGanVocoder.from_options(UnitHifiGanVocoder.Options(
        checkpoint=str(GOLDEN / "multispkr.pt"), config=str(GOLDEN / "multispkr.config.json"), speaker=2,
        dur_prediction=True))
    saved = voc.saved_options()
    assert saved.checkpoint is None and saved.config is None and saved.multispkr and saved.speaker == 2
    again = UnitHifiGanVocoder.from_options(UnitHifiGanVocoder.Options.model_validate(saved.model_dump()))
    again.load_state_dict(voc.state_dict(), strict=True)
    units = list(range(20))
    torch.testing.assert_close(again.synthesize(units), voc.synthesize(units), atol=0, rtol=0)


def test_forward_batch_and_stream_via_plugin():
    voc = UnitHifiGanVocoder.from_options(UnitHifiGanVocoder.Options(
        checkpoint=str(GOLDEN / "dur.pt"), config=str(GOLDEN / "dur.config.json"), stream_chunk_units=3))
    units = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    wav = voc(units)
    assert wav.shape == (2, 12 * 320)
    torch.testing.assert_close(wav[1], voc.synthesize(units[1].tolist()), atol=1e-6, rtol=0)
    streamed = torch.cat(list(voc.stream(iter([[u] for u in units[0].tolist()]))))
    torch.testing.assert_close(streamed, wav[0], atol=1e-5, rtol=0)


def test_safetensors_checkpoint_via_options(tmp_path):
    from lyra_unit_hifigan.checkpoint import load_fairseq, save_safetensors

    save_safetensors(load_fairseq(GOLDEN / "f0.pt", GOLDEN / "f0.config.json"), tmp_path / "f0.safetensors")
    voc = UnitHifiGanVocoder.from_options(UnitHifiGanVocoder.Options(checkpoint=str(tmp_path / "f0.safetensors")))
    exp = load_file(GOLDEN / "f0.expected.safetensors")
    wav = voc(exp["units"][None], f0=exp["f0"][None])
    torch.testing.assert_close(wav[0], exp["wav"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("text", ["12 873 4", "12,873,4", " <12><873><4> ", "<12> <873> <4>", "12\n873\t4"])
def test_parse_units(text):
    assert parse_units(text) == [12, 873, 4]


def test_vocode_units():
    exp = load_file(GOLDEN / "dur.expected.safetensors")
    wav, sr = vocode_units(exp["units"].tolist(), str(GOLDEN / "dur.pt"), str(GOLDEN / "dur.config.json"),
                           dur_prediction=True)
    assert sr == 16000 and isinstance(wav, np.ndarray) and wav.dtype == np.float32
    np.testing.assert_allclose(wav, exp["wav_dur"].numpy(), atol=1e-6, rtol=0)
