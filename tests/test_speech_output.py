"""Speech answers: offline vs streamed audio, the CLI's wav output, `lyra vocode`, unit parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch

from lyra_sdk import Lyra, LyraError
from lyra_sdk.cli import run_cli
from lyra_sdk.units import format_units, parse_units

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "examples" / "configs" / "tiny-speech-out.yaml"
GOLDEN = ROOT / "plugins" / "vocoders" / "unit_hifigan" / "tests" / "golden"


@pytest.fixture(scope="module")
def speaker(host):
    model = Lyra.from_config(CFG, ["generation.max_new_tokens=48", "vocoder.options.stream_chunk_units=4"], host=host)
    with torch.no_grad():  # random CTC weights emit mostly blanks; make units frequent so the stream has many chunks
        model.speech_decoder.output_proj.bias[-1] = -20.0
    return model


def test_stream_equals_offline(speaker):
    offline = speaker.generate_speech("Say something.")
    chunks = list(speaker.stream_speech("Say something."))
    assert len(chunks) > 2 and len(offline.units) > 30
    streamed = torch.cat([c.audio for c in chunks])
    assert streamed.shape == offline.waveform.shape
    torch.testing.assert_close(streamed, offline.waveform, rtol=0, atol=1e-5)
    assert chunks[-1].units == offline.units and chunks[-1].text == offline.text
    # the first audio arrives before the text is complete
    assert len(chunks[0].text) < len(offline.text)


def test_text_only_model_cannot_speak(text_model):
    with pytest.raises(LyraError, match="cannot speak"):
        text_model.generate_speech("hi")


@pytest.mark.parametrize("stream", [False, True])
def test_cli_writes_playable_16k_wav(tmp_path, capsys, stream):
    out = tmp_path / "answer.wav"
    args = ["run", "--config", str(CFG), "--prompt", "hello", "--generate-speech", "--out-speech", str(out)]
    code = run_cli(args + (["--stream"] if stream else []))
    assert code == 0, capsys.readouterr().err
    info = sf.info(str(out))
    assert info.samplerate == 16000 and info.channels == 1 and info.frames > 0
    assert not (tmp_path / "answer.wav.part").exists()


def test_cli_speech_needs_out_file(capsys):
    assert run_cli(["run", "--config", str(CFG), "-p", "hi", "--generate-speech"]) == 2
    assert "--out-speech" in capsys.readouterr().err


def test_vocode_cli(tmp_path, capsys):
    out = tmp_path / "v.wav"
    base = ["vocode", "--checkpoint", str(GOLDEN / "dur.pt"), "--config", str(GOLDEN / "dur.config.json")]
    assert run_cli(base + ["--units", "<12><73><4><5><5><9>", "--out", str(out), "--dur-prediction"]) == 0
    assert sf.info(str(out)).samplerate == 16000
    for units, needle in [("12 5000", "out of range"), ("", "empty unit list"), ("1 x 2", "not non-negative")]:
        assert run_cli(base + ["--units", units, "--out", str(out)]) == 2
        assert needle in capsys.readouterr().err
    trunc = tmp_path / "t.pt"
    trunc.write_bytes((GOLDEN / "dur.pt").read_bytes()[:1000])
    assert run_cli(["vocode", "--checkpoint", str(trunc), "--config", str(GOLDEN / "dur.config.json"),
                    "--units", "1 2", "--out", str(out)]) == 2
    assert "truncated" in capsys.readouterr().err
    assert run_cli(["vocode", "--checkpoint", str(GOLDEN / "dur.pt"), "--config",
                    str(GOLDEN / "multispkr.config.json"), "--units", "1 2", "--out", str(out)]) == 2
    assert "spkr" in capsys.readouterr().err


def test_parse_units():
    assert parse_units("12 873 4") == [12, 873, 4] == parse_units("<12><873><4>") == parse_units("12,873, 4")
    assert format_units([1, 2]) == "<1><2>"
    for bad in ["", "  ", "<1><x>", "1 -2"]:
        with pytest.raises(LyraError):
            parse_units(bad)
