"""The CLI: exit codes and messages; user mistakes exit 2 with one clear message, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lyra_sdk.cli import run_cli

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"


def _cli(capsys, *args):
    code = run_cli(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_plugins_list_json(capsys):
    code, out, _ = _cli(capsys, "plugins", "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert {"kind", "name", "package", "version"} <= set(rows[0])
    assert any(r["kind"] == "llm" and r["name"] == "qwen2" for r in rows)


def test_config_validate_and_show(capsys, tmp_path):
    code, out, _ = _cli(capsys, "config", "validate", str(CONFIGS / "tiny-text.yaml"))
    assert code == 0 and out.startswith("ok:")
    code, out, _ = _cli(capsys, "config", "show", str(CONFIGS / "tiny-text.yaml"), "--set", "generation.max_new_tokens=9")
    assert code == 0 and "max_new_tokens: 9" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "tiny-text.yaml").read_text() + "\nfoo: 1\n")
    code, _, err = _cli(capsys, "config", "validate", str(bad))
    assert code == 2 and "foo: unknown key" in err and "Traceback" not in err


def test_run_same_text_twice_with_seed(capsys):
    args = ["run", "--config", str(CONFIGS / "tiny-text.yaml"), "--prompt", "Hello", "--seed", "0",
            "--temperature", "0.8", "--max-new-tokens", "6"]
    code1, out1, err1 = _cli(capsys, *args)
    code2, out2, _ = _cli(capsys, *args)
    assert code1 == code2 == 0 and out1 == out2 and out1.strip()
    assert "RANDOM" in err1


@pytest.mark.parametrize("args, needle", [
    (["run", "--config", "missing.yaml", "-p", "hi"], "not found"),
    (["run", "--config", str(CONFIGS / "tiny-text.yaml"), "--speech", "nope.wav"], "file not found"),
    (["run", "--config", str(CONFIGS / "tiny-text.yaml"), "-p", "<speech> hi"], "no speech was given"),
    (["run", "--config", str(CONFIGS / "tiny-text.yaml")], "nothing to answer"),
    (["run", "--config", str(CONFIGS / "tiny-text.yaml"), "-p", " \n"], "the prompt is empty"),
    (["run", "--config", str(CONFIGS / "tiny-text.yaml"), "-p", "hi", "--set", "llm.plugin=nope"], "unknown llm plugin"),
    (["run", "--model", "no/such/folder", "-p", "hi"], "model folder not found"),
    (["run", "--config", str(CONFIGS / "tiny-text.yaml"), "-p", "hi", "--temperature", "-1"], "Invalid value"),
])
def test_user_mistakes_exit_2(capsys, args, needle):
    code, _, err = _cli(capsys, *args)
    assert code == 2, err
    assert needle in err and "Traceback" not in err


def test_speech_file_errors_exit_2(capsys, tmp_path):
    wav = tmp_path / "speech.wav"
    sf.write(wav, np.zeros(0, dtype=np.float32), 16000)
    code, _, err = _cli(capsys, "run", "--config", str(CONFIGS / "tiny-text.yaml"), "--speech", str(wav))
    assert code == 2 and "Traceback" not in err


def test_wordless_speech_instruction_is_refused_but_answered_with_a_prompt(capsys, caplog, tmp_path):
    silence, blip = tmp_path / "silence.wav", tmp_path / "blip.wav"
    sf.write(silence, np.zeros(32000, dtype=np.float32), 16000)
    sf.write(blip, 0.5 * np.ones(400, dtype=np.float32), 16000)  # 25 ms
    base = ["run", "--config", str(CONFIGS / "tiny-speech.yaml"), "--max-new-tokens", "2"]
    code, out, err = _cli(capsys, *base, "--speech", str(silence), "--speech", str(blip))
    assert code == 2 and not out and "Traceback" not in err
    assert "silence.wav is silent (peak level -inf dBFS over 2.0 s)" in err and "blip.wav is only 25 ms long" in err
    assert "no spoken question" in err and "--prompt" in err
    code, out, _ = _cli(capsys, *base, "--speech", str(silence), "--prompt", "Is anyone talking?")
    assert code == 0 and out.strip()
    assert any("silence.wav is silent" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_an_empty_answer_is_pointed_out(capsys, monkeypatch):
    from lyra_sdk.model import Lyra

    monkeypatch.setattr(Lyra, "generate", lambda self, prompts, **kw: [""])
    code, out, err = _cli(capsys, "run", "--config", str(CONFIGS / "tiny-text.yaml"), "-p", "hi")
    assert code == 0 and out == "\n" and "answer is empty" in err


def test_console_script_runs():
    exe = Path(sys.executable).parent / "lyra"
    res = subprocess.run([str(exe), "plugins", "list"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "simple_mlp" in res.stdout
    res = subprocess.run([str(exe), "run", "--config", "nope.yaml", "-p", "x"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "not found" in res.stderr


def test_info_counts_parameters_on_meta(capsys):
    code, out, _ = _cli(capsys, "info", "--config", str(CONFIGS / "tiny-text.yaml"), "--json")
    assert code == 0
    data = json.loads(out)
    # tiny Qwen2: tied 151936 x 64 embedding + 2 layers + final norm
    emb = 151936 * 64
    layer = (64 * 64 + 64) + 2 * (64 * 32 + 32) + 64 * 64 + 3 * 64 * 128 + 2 * 64  # q, k+v, o, mlp, norms
    assert data["total"] == emb + 2 * layer + 64
    assert data["components"][0]["path"] == "llm"


def _video_with_audio(path: Path) -> None:
    import av

    c = av.open(str(path), "w")
    v = c.add_stream("mpeg4", rate=10)
    v.width, v.height, v.pix_fmt = 64, 64, "yuv420p"
    a = c.add_stream("aac", rate=16000)
    a.layout = "mono"
    for i in range(20):
        for p in v.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 10, np.uint8), format="rgb24")):
            c.mux(p)
    sig = (0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)).astype(np.float32)[None]
    for k in range(0, 32000, 1024):
        fr = av.AudioFrame.from_ndarray(sig[:, k : k + 1024], format="fltp", layout="mono")
        fr.sample_rate, fr.pts = 16000, k
        for p in a.encode(fr):
            c.mux(p)
    for s in (v, a):
        for p in s.encode():
            c.mux(p)
    c.close()


def test_omni_video_with_its_audio_and_a_sound(capsys, tmp_path):
    video = tmp_path / "clip.mp4"
    _video_with_audio(video)
    cfg = str(CONFIGS / "tiny-omni.yaml")
    code, out, err = _cli(capsys, "run", "--config", cfg, "--video", str(video), "--video-audio",
                          "--sound", str(video), "-p", "What happens?", "--max-new-tokens", "3")
    assert code == 0, err
    assert out.strip()


def test_show_heard_prints_the_transcript_or_says_why_not(capsys, tmp_path):
    clip = tmp_path / "tone.wav"
    t = np.arange(16000, dtype=np.float32) / 16000
    sf.write(clip, 0.3 * np.sin(2 * np.pi * 440 * t), 16000)
    base = ["run", "--config", str(CONFIGS / "tiny-speech.yaml"), "--max-new-tokens", "2", "--speech", str(clip),
            "--prompt", "<speech> What is it?", "--show-heard"]
    code, out, err = _cli(capsys, *base)
    assert code == 0 and out.strip() and "no speech_compression" in err
    code, out, err = _cli(capsys, *base, "--set", "speech_compression.mode=ctc")
    heard = [line for line in err.splitlines() if line.startswith("heard:")]
    assert code == 0 and len(heard) == 1, err  # the greedy read-out of a random projector: some pieces or none
