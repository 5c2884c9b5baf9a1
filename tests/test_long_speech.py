"""Hours-long speech: exact window counts, no padded tail, bounded memory, estimates."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from lyra_sdk import Lyra, Modality
from lyra_sdk.estimate import estimate_speech

SPEECH_CFG = {"plugin": "whisper", "options": {"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 4,
                                              "encoder_ffn_dim": 128, "max_batch_windows": 4}}


@pytest.fixture(scope="module")
def model(tiny_config, host):
    cfg = tiny_config(speech=SPEECH_CFG)
    cfg["projectors"]["speech"] = {"plugin": "simple_mlp", "options": {"k": 5, "hidden_dim": 64}}
    return Lyra.from_config(cfg, host=host)


@pytest.mark.parametrize("seconds, tokens", [(0.5, 5), (30.0, 300), (30.0 + 1 / 16000, 301), (60.0, 600),
                                             (61.0, 610), (95.0, 950)])
def test_exact_token_counts(model, seconds, tokens):
    audio = np.random.default_rng(0).standard_normal(int(round(seconds * 16000))).astype(np.float32) * 0.1
    with torch.no_grad():
        (emb, _), = model.encode_media(Modality.SPEECH, [audio])
    assert emb.shape[0] == tokens  # 10 tokens/s; no silent extra window, no padded tail
    est = estimate_speech(model, seconds)
    assert est.speech_tokens == tokens


def test_windows_are_independent_and_concatenated_in_order(model):
    rng = np.random.default_rng(1)
    audio = rng.standard_normal(16000 * 65).astype(np.float32) * 0.1
    with torch.no_grad():
        (whole, _), = model.encode_media(Modality.SPEECH, [audio])
        parts = model.encode_media(Modality.SPEECH, [audio[:480000], audio[480000:960000], audio[960000:]])
    torch.testing.assert_close(whole, torch.cat([p for p, _ in parts]), rtol=0, atol=1e-5)


def test_progress_reports_every_window(model):
    calls = []
    audio = np.zeros(16000 * 100, dtype=np.float32)
    with torch.no_grad():
        model.encode_media(Modality.SPEECH, [audio], progress=lambda d, t: calls.append((d, t)))
    assert calls == [(4, 4)]  # 4 windows, max_batch_windows 4 -> one piece
    calls.clear()
    with torch.no_grad():
        model.encode_media(Modality.SPEECH, [audio, audio], progress=lambda d, t: calls.append((d, t)))
    assert calls == [(4, 8), (8, 8)]


def test_a_recording_too_long_for_the_context_is_refused_after_its_first_piece(model):
    from lyra_sdk import LyraError

    audio = np.zeros(16000 * 30 * 12, dtype=np.float32)  # 12 windows = 3 pieces of 4
    calls = []
    with torch.no_grad(), pytest.raises(LyraError, match=r"6.0 min speech input needs at least 3301 tokens "
                                                         r"\(12 windows of 30 s, 300 tokens each\), more than the 3000"):
        model.encode_media(Modality.SPEECH, [audio], progress=lambda d, t: calls.append(d), max_tokens=3000)
    assert calls == []  # refused before the rest was encoded
    with torch.no_grad():
        (emb, _), = model.encode_media(Modality.SPEECH, [audio], max_tokens=3600)  # fits: nothing refused
    assert emb.shape[0] == 3600


def test_wordless_speech_only_warns_in_prepare_but_is_refused_as_an_instruction(model, caplog):
    from lyra_sdk import MediaError
    from lyra_sdk.prompt import Prompt

    silent = Prompt("<speech>", {"speech": [np.zeros(16000, dtype=np.float32)]})
    with torch.no_grad():
        model.prepare([silent])  # training-style use: a warning, no error
    assert any("a speech input is silent" in r.getMessage() for r in caplog.records)
    with pytest.raises(MediaError, match="no spoken question to answer"):
        model.generate([silent], max_new_tokens=1)
    asked = Prompt("<speech> Is anyone talking?", {"speech": [np.zeros(16000, dtype=np.float32)]})
    assert len(model.generate([asked], max_new_tokens=1)) == 1


def test_estimate_two_hours(model):
    est = estimate_speech(model, 7200)
    assert est.windows == 240 and est.speech_tokens == 72_000
    assert est.total > est.weights > 0


_TWO_HOURS = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, torch
    from lyra_sdk import Lyra, Modality
    cfg = json.loads(sys.argv[1])
    model = Lyra.from_config(cfg)
    audio = (np.random.default_rng(0).standard_normal(7200 * 16000) * 0.1).astype(np.float32)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        (emb, _), = model.encode_media(Modality.SPEECH, [audio])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"tokens": emb.shape[0], "growth_mb": (peak - base) / 1024}))
""")


def test_two_hours_of_audio_under_memory_bound(tiny_config):
    """2 h of audio (460 MB of samples) through a tiny encoder: peak RSS grows by far less than the 1.4 GB
    that encoding all 240 windows at once would need (log-mel + STFT of every window)."""
    cfg = tiny_config(speech=SPEECH_CFG)
    cfg["projectors"]["speech"] = {"plugin": "simple_mlp", "options": {"k": 5, "hidden_dim": 64}}
    res = subprocess.run([sys.executable, "-c", _TWO_HOURS, json.dumps(cfg)], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["tokens"] == 72_000
    assert out["growth_mb"] < 400, out  # bound: one 4-window piece + 72k tokens, not the whole recording
