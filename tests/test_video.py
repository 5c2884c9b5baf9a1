"""Video loading: uniform frame sampling with timestamps, the audio track, and clear errors for bad files.

Videos are written into tmp_path with PyAV (no binaries in the repository).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from lyra_sdk.errors import MediaError
from lyra_sdk.interfaces import Modality
from lyra_sdk.media import video as video_mod
from lyra_sdk.media.load import load_media
from lyra_sdk.media.video import VideoClip, load_video, sample_indices


def write_video(path: Path, frames: int = 30, fps: int = 10, size: tuple[int, int] = (64, 48),
                audio_seconds: float | None = None) -> Path:
    """Frame i is a flat grey of level 8*i (so a frame's index can be read back); optional 440 Hz stereo audio."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        astream = None
        if audio_seconds is not None:
            astream = container.add_stream("aac", rate=44100)
            astream.layout = "stereo"
        if frames == 0:
            container.start_encoding()
        for i in range(frames):
            img = np.full((size[1], size[0], 3), (8 * i) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if astream is not None:
            total = int(audio_seconds * 44100)
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / 44100)).astype(np.float32)
            stereo = np.stack([wave, wave])
            for k in range(0, total, 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo[:, k:k + 1024]), format="fltp",
                                                   layout="stereo")
                frame.sample_rate, frame.pts = 44100, k
                for packet in astream.encode(frame):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    return path


def _level(image: Image.Image) -> int:
    return int(round(np.asarray(image, dtype=np.float32).mean() / 8))


def test_sample_indices():
    assert sample_indices(5, 16) == [0, 1, 2, 3, 4]
    assert sample_indices(30, 4) == [0, 10, 19, 29]
    assert len(set(sample_indices(1000, 16))) == 16


def test_uniform_frames_and_timestamps(tmp_path):
    clip = load_video(write_video(tmp_path / "v.mp4", frames=30, fps=10), max_frames=4)
    assert isinstance(clip, VideoClip) and len(clip) == 4
    assert all(f.mode == "RGB" and f.size == (64, 48) for f in clip.frames)
    assert [_level(f) for f in clip.frames] == [0, 10, 19, 29]
    assert clip.timestamps == pytest.approx([0.0, 1.0, 1.9, 2.9])
    assert clip.fps == pytest.approx(10.0) and clip.duration == pytest.approx(3.0, abs=0.1)
    assert clip.audio is None


def test_short_clip_keeps_every_frame_and_bytes_work(tmp_path):
    path = write_video(tmp_path / "v.mp4", frames=5, fps=5)
    clip = load_video(path.read_bytes())
    assert len(clip) == 5 and [_level(f) for f in clip.frames] == [0, 1, 2, 3, 4]
    assert len(load_media(Modality.VIDEO, str(path))) == 5


def test_long_clip_is_sampled_by_seeking(tmp_path, monkeypatch):
    path = write_video(tmp_path / "v.mp4", frames=60, fps=10)
    full = load_video(path, max_frames=6)
    monkeypatch.setattr(video_mod, "SEEK_MIN_FRAMES", 10)
    seeked = load_video(path, max_frames=6)
    assert [_level(f) for f in seeked.frames] == [_level(f) for f in full.frames]
    assert seeked.timestamps == pytest.approx(full.timestamps)


def test_audio_track_as_16k_mono(tmp_path):
    path = write_video(tmp_path / "va.mp4", frames=20, fps=10, audio_seconds=2.0)
    clip = load_video(path, max_frames=8, with_audio=True)
    assert len(clip) == 8
    assert clip.audio is not None and clip.audio.dtype == np.float32 and clip.audio.ndim == 1
    assert abs(clip.audio.shape[0] - 32000) < 3000
    spectrum = np.abs(np.fft.rfft(clip.audio[4000:20000]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) < 5  # 16000-sample window: 1 Hz bins; the tone survives
    assert load_video(write_video(tmp_path / "v.mp4"), with_audio=True).audio is None


def test_clip_passes_through_and_is_thinned(tmp_path):
    clip = load_video(write_video(tmp_path / "v.mp4", frames=10, fps=10))
    assert load_video(clip) is clip
    thin = load_video(clip, max_frames=3)
    assert [_level(f) for f in thin.frames] == [0, 4, 9] and thin.timestamps == pytest.approx([0.0, 0.4, 0.9])


def test_missing_empty_and_not_a_video(tmp_path):
    with pytest.raises(MediaError, match="video file not found"):
        load_video(tmp_path / "nope.mp4")
    with pytest.raises(MediaError, match="got a directory"):
        load_video(tmp_path)
    (tmp_path / "e.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        load_video(tmp_path / "e.mp4")
    (tmp_path / "x.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError, match="corrupt"):
        load_video(tmp_path / "x.mp4")
    with pytest.raises(MediaError, match="max_frames"):
        load_video(tmp_path / "x.mp4", max_frames=0)


def test_truncated_video(tmp_path):
    data = write_video(tmp_path / "v.mp4").read_bytes()
    (tmp_path / "t.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="corrupt"):
        load_video(tmp_path / "t.mp4")


def test_zero_length_video_and_no_video_stream(tmp_path):
    with pytest.raises(MediaError, match="no frames"):
        load_video(write_video(tmp_path / "z.avi", frames=0))
    with pytest.raises(MediaError, match="no video stream"):
        load_video(write_video(tmp_path / "z.mp4", frames=0))
    audio_only = tmp_path / "a.m4a"
    with av.open(str(audio_only), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            container.mux(packet)
    with pytest.raises(MediaError, match=r"no video stream \(streams found: audio\)"):
        load_video(audio_only)
