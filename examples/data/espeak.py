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


def _speak_job(job: tuple[str, Voice, str]) -> float:
    text, voice, path = job
    return len(speak(text, voice, Path(path))) / 16000


def speak_clips(jobs: list[tuple[str, Voice, str]], workers: int = 1, max_seconds: float = 29.5) -> float:
    """Speak (text, voice, wav path) jobs in ``workers`` processes with progress on stderr; returns the total
    seconds. A clip longer than ``max_seconds`` (Whisper's 30 s window) stops the run with a SystemExit."""
    import sys
    from concurrent.futures import ProcessPoolExecutor

    seconds = 0.0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, s in enumerate(pool.map(_speak_job, jobs, chunksize=8)):
            seconds += s
            if s > max_seconds:
                raise SystemExit(f"clip {i} ({jobs[i][2]}) is {s:.1f} s: longer than Whisper's 30 s window")
            if i % 50 == 0 or i == len(jobs) - 1:
                sys.stderr.write(f"\rspeaking: {i + 1}/{len(jobs)} clips ({seconds / 3600:.2f} h)")
    sys.stderr.write("\n")
    return seconds


def update_stats(out: Path, values: dict) -> dict:
    """Merge ``values`` into OUT/stats.json (created if missing) and return the whole record."""
    import json

    stats_file = out / "stats.json"
    stats = json.loads(stats_file.read_text(encoding="utf-8")) if stats_file.is_file() else {}
    stats.update(values)
    stats_file.write_text(json.dumps(stats, indent=1), encoding="utf-8")
    return stats
