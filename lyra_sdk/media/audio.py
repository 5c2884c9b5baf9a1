"""Audio input: any common file (or its bytes) -> 16 kHz mono float32 samples.

wav/flac/ogg (and the other formats libsndfile reads) go through soundfile; everything else (mp3, m4a, aac,
webm, ...) goes through PyAV, which links FFmpeg's libraries, so no ``ffmpeg`` binary is needed. Channels are
averaged to mono and the result is resampled with soxr. Every failure is a :class:`~lyra_sdk.errors.MediaError`
that names the file and the problem; errors of the decoding libraries never leak.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ..errors import MediaError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""The sample rate every speech encoder of the SDK expects."""

# Extensions libsndfile reads natively; a file with one of these that soundfile cannot read is retried with PyAV.
SOUNDFILE_EXTENSIONS = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".au", ".w64"})

AudioSource = str | os.PathLike | bytes


def _describe(source: AudioSource) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes of audio>"
    return str(source)


def _check_path(source: str | os.PathLike) -> Path:
    path = Path(source)
    if not path.exists():
        raise MediaError(f"audio file not found: {path}")
    if path.is_dir():
        raise MediaError(f"expected an audio file, got a directory: {path}")
    if path.stat().st_size == 0:
        raise MediaError(f"audio file is empty (0 bytes): {path}")
    return path


def _read_soundfile(source: Path | bytes) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 samples and their rate, through libsndfile."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    data, rate = sf.read(handle, dtype="float32", always_2d=True)  # (frames, channels)
    return data, int(rate)


def _read_pyav(source: Path | bytes) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 samples and their rate, through PyAV (FFmpeg libraries)."""
    import av  # imported on use: it is only needed for formats libsndfile does not read

    handle = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    chunks: list[np.ndarray] = []
    with av.open(handle, mode="r") as container:
        if not container.streams.audio:
            raise ValueError("the file has no audio stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or stream.rate
        # Planar float keeps the source's rate and channel layout; soxr does the resampling.
        resampler = av.AudioResampler(format="fltp")
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())  # (channels, samples)
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    if not rate:
        raise ValueError("the audio stream declares no sample rate")
    if not chunks:
        return np.zeros((0, 1), dtype=np.float32), int(rate)
    channels = min(c.shape[0] for c in chunks)
    data = np.concatenate([c[:channels] for c in chunks], axis=1).T  # (frames, channels)
    return np.ascontiguousarray(data, dtype=np.float32), int(rate)


def _decode(source: Path | bytes, name: str) -> tuple[np.ndarray, int]:
    use_soundfile = isinstance(source, bytes) or source.suffix.lower() in SOUNDFILE_EXTENSIONS
    errors: list[str] = []
    if use_soundfile:
        try:
            return _read_soundfile(source)
        except Exception as exc:  # libsndfile's errors are not part of our API
            errors.append(f"soundfile: {exc}")
            log.debug("soundfile could not read %s (%s); trying PyAV", name, exc)
    try:
        return _read_pyav(source)
    except Exception as exc:  # PyAV/FFmpeg errors are not part of our API
        errors.append(f"PyAV: {exc}")
    raise MediaError(f"could not decode audio {name}: the file is corrupt or not a supported audio format "
                     f"({'; '.join(errors)})")


def resample(audio: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Resample ``audio`` ((frames,) or (frames, channels)) from ``orig_sr`` to ``new_sr`` Hz with soxr.

    Returns float32; the input is returned as float32 unchanged when the rates are equal.
    """
    if int(orig_sr) <= 0 or int(new_sr) <= 0:
        raise MediaError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    audio = np.asarray(audio, dtype=np.float32)
    if orig_sr == new_sr or audio.shape[0] == 0:
        return audio
    return np.asarray(soxr.resample(audio, int(orig_sr), int(new_sr), quality="HQ"), dtype=np.float32)


def load_audio(source: AudioSource, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file (a path, or the file's bytes) as mono float32 samples at ``sample_rate`` Hz.

    Returns a 1-D array of shape (samples,). Raises :class:`MediaError` for a missing path, a directory,
    an empty or undecodable file, a file with no samples, or samples that are not finite.
    """
    if sample_rate <= 0:
        raise MediaError(f"sample_rate must be positive, got {sample_rate}")
    name = _describe(source)
    if isinstance(source, (bytearray, memoryview)):
        source = bytes(source)
    if isinstance(source, bytes):
        if not source:
            raise MediaError("audio bytes are empty (0 bytes)")
        data, rate = _decode(source, name)
    elif isinstance(source, (str, os.PathLike)):
        data, rate = _decode(_check_path(source), name)
    else:
        raise MediaError(f"expected a path or bytes for audio, got {type(source).__name__}")
    if data.shape[0] == 0:
        raise MediaError(f"audio {name} contains no samples")
    if not np.isfinite(data).all():
        raise MediaError(f"audio {name} contains non-finite samples (NaN or infinity)")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]  # (frames,)
    out = resample(mono, rate, sample_rate)
    if out.shape[0] == 0:
        raise MediaError(f"audio {name} is too short: {data.shape[0]} sample(s) at {rate} Hz "
                         f"leave none at {sample_rate} Hz")
    log.debug("loaded %s: %d Hz x %d channel(s) -> %d samples at %d Hz",
              name, rate, data.shape[1], out.shape[0], sample_rate)
    return np.ascontiguousarray(out, dtype=np.float32)


SILENCE_DBFS = -60.0
"""Peak level (dB relative to full scale) below which a clip counts as silent."""

MIN_SPEECH_SECONDS = 0.1
"""Clips shorter than this hold too little sound for a word."""


def peak_dbfs(samples: np.ndarray) -> float:
    """Peak level of float samples in dB relative to full scale (1.0); ``-inf`` for digital silence."""
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    return 20.0 * float(np.log10(peak)) if peak > 0 else float("-inf")


def speech_problem(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str | None:
    """Why ``samples`` cannot hold words (silent, or too short), or None when they might.

    The model still runs on such input (and answers something); callers use this to warn, or to refuse when the
    audio is meant to be the instruction itself.
    """
    seconds = samples.shape[0] / sample_rate
    if seconds < MIN_SPEECH_SECONDS:
        return f"is only {seconds * 1000:.0f} ms long (too short to hold a word)"
    level = peak_dbfs(samples)
    if level < SILENCE_DBFS:
        shown = "-inf" if level == float("-inf") else f"{level:.0f}"
        return f"is silent (peak level {shown} dBFS over {seconds:.1f} s)"
    return None


class WavWriter:
    """Writes float audio to a 16-bit PCM wav incrementally (a streamed answer is playable as it grows).

    With ``atomic`` the file is written under a temporary name and renamed on a clean close, so an interrupted
    run never leaves a half-written file under the requested name; without it (streaming) every write is flushed
    to the named file with an updated header, so the file can be played while it grows.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, atomic: bool = True) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.frames = 0
        if self.path.parent and not self.path.parent.exists():
            raise MediaError(f"cannot write {self.path}: folder {self.path.parent} does not exist")
        self._tmp = self.path.with_name(self.path.name + ".part") if atomic else self.path
        self._file = sf.SoundFile(str(self._tmp), "w", samplerate=sample_rate, channels=1, subtype="PCM_16",
                                  format="WAV")

    def write(self, audio: np.ndarray) -> None:
        """Append mono samples in [-1, 1]."""
        data = np.asarray(audio, dtype=np.float32).reshape(-1)
        self._file.write(np.clip(data, -1.0, 1.0))
        self._file.flush()
        self.frames += data.shape[0]

    @property
    def seconds(self) -> float:
        """Audio written so far, in seconds."""
        return self.frames / self.sample_rate

    def __enter__(self) -> "WavWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._file.close()
        if self._tmp == self.path:
            return
        if exc_type is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)
