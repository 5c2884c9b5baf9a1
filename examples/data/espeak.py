"""espeak-ng speech for the example data scripts: text + voice -> a 16 kHz PCM wav."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

Voice = tuple[str, int, int]  # espeak voice "accent+variant", words per minute, pitch 0-99


def speak(text: str, voice: Voice, out: Path) -> np.ndarray:
    """Synthesise ``text`` with espeak-ng, store it at ``out`` as 16 kHz mono PCM and return the samples."""
    name, speed, pitch = voice
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(["espeak-ng", "-v", name, "-s", str(speed), "-p", str(pitch), "-w", tmp.name, text],
                       check=True, capture_output=True)
        audio, sr = sf.read(tmp.name, dtype="float32")
    audio = soxr.resample(audio, sr, 16000).astype(np.float32)
    sf.write(out, audio, 16000, subtype="PCM_16")
    return audio
