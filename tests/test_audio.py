"""load_audio: every container we promise reads as 16 kHz mono float32; every broken input is a MediaError."""

from __future__ import annotations

import fractions

import numpy as np
import pytest
import soundfile as sf

from lyra_sdk.errors import MediaError
from lyra_sdk.media import load_audio, resample
from lyra_sdk.media.audio import peak_dbfs, speech_problem


def _tone(rate: int, seconds: float, channels: int) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    left = 0.3 * np.sin(2 * np.pi * 440 * t)
    cols = [left, 0.3 * np.sin(2 * np.pi * 660 * t)][:channels]
    return np.stack(cols, axis=1).astype(np.float32)  # (frames, channels)


@pytest.mark.parametrize("ext,fmt,subtype", [
    ("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"),
])
@pytest.mark.parametrize("rate", [8000, 44100])
def test_soundfile_formats_load_as_16k_mono(tmp_path, ext, fmt, subtype, rate):
    path = tmp_path / f"tone.{ext}"
    sf.write(path, _tone(rate, 1.5, channels=2), rate, format=fmt, subtype=subtype)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.shape[0] - 24000) <= 2
    assert 0.05 < np.abs(audio).max() <= 1.0


def test_bytes_source(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, _tone(16000, 0.5, channels=1), 16000)
    audio = load_audio(path.read_bytes())
    assert audio.shape == (8000,)
    np.testing.assert_allclose(audio, load_audio(path))


def test_stereo_is_averaged(tmp_path):
    data = np.stack([np.full(16000, 0.5), np.full(16000, -0.1)], axis=1).astype(np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, data, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), 0.2, atol=1e-6)


def test_mp3_through_pyav(tmp_path):
    import av  # a core dependency: no skip
    rate, seconds = 44100, 1.0
    samples = _tone(rate, seconds, channels=1)[:, 0]
    path = tmp_path / "tone.mp3"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mp3", rate=rate)
        stream.layout = "mono"
        frame_size = 1152
        for i, start in enumerate(range(0, len(samples), frame_size)):
            chunk = samples[start:start + frame_size][None, :]  # (1, n) planar float
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = fractions.Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    # mp3 adds encoder delay/padding of at most a couple of frames
    assert 16000 <= audio.shape[0] <= 16000 + 3 * 1152
    assert np.abs(audio).max() > 0.1


def test_missing_path(tmp_path):
    with pytest.raises(MediaError, match="not found.*nope.wav"):
        load_audio(tmp_path / "nope.wav")


def test_directory(tmp_path):
    with pytest.raises(MediaError, match="directory"):
        load_audio(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty.*empty\.wav"):
        load_audio(path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "junk.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError, match=r"could not decode audio .*junk\.wav"):
        load_audio(path)


def test_zero_sample_wav(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros((0,), dtype=np.float32), 16000)
    with pytest.raises(MediaError, match=r"zero\.wav contains no samples"):
        load_audio(path)


def test_non_finite_samples(tmp_path):
    data = np.zeros(1600, dtype=np.float32)
    data[10] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, data, 16000, subtype="FLOAT")
    with pytest.raises(MediaError, match="non-finite"):
        load_audio(path)


def test_resample_lengths():
    x = np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    assert resample(x, 8000, 16000).shape == (16000,)
    assert resample(x, 16000, 16000) is not None and resample(x, 16000, 16000).dtype == np.float32
    with pytest.raises(MediaError):
        resample(x, 0, 16000)


def test_speech_problem_names_silence_and_too_short_clips():
    tone = _tone(16000, 1.0, channels=1)[:, 0]
    assert speech_problem(tone) is None and abs(peak_dbfs(tone) - 20 * np.log10(0.3)) < 0.01
    assert speech_problem(np.zeros(16000, np.float32)) == "is silent (peak level -inf dBFS over 1.0 s)"
    assert "peak level -70 dBFS" in speech_problem(tone * 10 ** (-70 / 20) / 0.3)
    assert speech_problem(tone[:800]) == "is only 50 ms long (too short to hold a word)"
    assert speech_problem(tone[:800], sample_rate=8000) is None  # 100 ms at 8 kHz
