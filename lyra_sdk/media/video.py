"""Video input: a path or the file's bytes -> a :class:`VideoClip` of up to N RGB frames sampled uniformly across the
clip, with their timestamps and, on request, the audio track as 16 kHz mono samples.

Decoding goes through PyAV (FFmpeg's libraries; no ``ffmpeg`` binary). Short clips are decoded front to back;
long ones are sampled by seeking to each chosen frame, so a one-hour video costs N short decodes, not an hour of
decoding. Every failure is a :class:`~lyra_sdk.errors.MediaError` naming the file and the problem.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import MediaError

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAMES = 16
"""Frames sampled from a video unless asked otherwise (Lyra and Qwen2-VL use up to 16)."""

SEEK_MIN_FRAMES = 600
"""Clips with more frames than this are sampled by seeking instead of decoding every frame."""

VideoSource = str | os.PathLike | bytes


@dataclass
class VideoClip:
    """Frames sampled from a video.

    ``frames``: RGB PIL images in time order; ``timestamps[i]``: seconds from the start of the video stream
    of ``frames[i]``; ``fps``: the stream's average frame rate; ``duration``: the clip's length in seconds;
    ``audio``: (samples,) 16 kHz mono float32 of the audio track, or None (not asked for, or no audio track).
    """

    frames: list[Image.Image]
    timestamps: list[float]
    fps: float
    duration: float
    audio: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frames)


def sample_indices(total: int, max_frames: int) -> list[int]:
    """Indices of up to ``max_frames`` frames spread evenly over ``total`` frames, first and last included."""
    if total <= max_frames:
        return list(range(total))
    return [int(i) for i in np.linspace(0, total - 1, max_frames).round()]


def _describe(source: VideoSource) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes of video>"
    return str(source)


def _open(source: Path | bytes, name: str) -> Any:
    import av

    handle = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        return av.open(handle, mode="r")
    except Exception as exc:  # PyAV/FFmpeg errors are not part of our API
        raise MediaError(f"could not open video {name}: the file is corrupt or not a supported video format "
                         f"({exc})") from None


def _stream_info(container: Any, name: str) -> tuple[Any, float, float, float]:
    """(video stream, fps, duration in s, start time in s); MediaError when there is no video stream."""
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        raise MediaError(f"{name} has no video stream (streams found: {kinds})")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    tb = float(stream.time_base) if stream.time_base else 0.0
    start = stream.start_time * tb if stream.start_time is not None else 0.0
    if stream.duration and tb:
        duration = stream.duration * tb
    elif container.duration:
        duration = container.duration / 1_000_000  # av.time_base
    else:
        duration = 0.0
    return stream, fps, float(duration), float(start)


def _count_frames(source: Path | bytes, name: str) -> int:
    """Frames of the first video stream, counted from its packets (no decoding)."""
    with _open(source, name) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size > 0)


def _decode_all(source: Path | bytes, name: str, wanted: set[int]) -> tuple[dict[int, Any], int]:
    """Decode front to back; keep the frames whose index is in ``wanted``. Returns them and the frame count."""
    kept: dict[int, Any] = {}
    count = 0
    with _open(source, name) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for count, frame in enumerate(container.decode(stream), start=1):
            if count - 1 in wanted:
                kept[count - 1] = (frame.time, frame.to_image())
    return kept, count


def _decode_seeking(source: Path | bytes, name: str, indices: list[int], fps: float,
                    start: float) -> dict[int, Any]:
    """Seek to each wanted frame's time and decode forward to it."""
    kept: dict[int, Any] = {}
    with _open(source, name) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = float(stream.time_base)
        for index in indices:
            target = start + index / fps
            container.seek(int(target / tb), stream=stream, backward=True, any_frame=False)
            chosen = None
            for frame in container.decode(stream):
                chosen = frame
                if frame.time is not None and frame.time >= target - 0.5 / fps:
                    break
            if chosen is not None:
                kept[index] = (chosen.time, chosen.to_image())
    return kept


def _read_frames(source: Path | bytes, name: str,
                 max_frames: int) -> tuple[list[Image.Image], list[float], float, float]:
    with _open(source, name) as container:
        stream, fps, duration, start = _stream_info(container, name)
        total = int(stream.frames or 0)
    if total <= 0:
        total = _count_frames(source, name)
    if total <= 0:
        raise MediaError(f"video {name} contains no frames (zero-length video)")
    indices = sample_indices(total, max_frames)
    if total > SEEK_MIN_FRAMES and fps > 0:
        kept = _decode_seeking(source, name, indices, fps, start)
    else:
        kept, decoded = _decode_all(source, name, set(indices))
        if decoded == 0:
            raise MediaError(f"video {name} contains no decodable frames (zero-length or corrupt video)")
        if decoded < total:  # the container over-stated its frame count: sample again from what is there
            indices = sample_indices(decoded, max_frames)
            kept, _ = _decode_all(source, name, set(indices))
    if not kept:
        raise MediaError(f"video {name} contains no decodable frames (zero-length or corrupt video)")
    frames, stamps = [], []
    for index in sorted(kept):
        time, image = kept[index]
        frames.append(image.convert("RGB"))
        fallback = index / fps if fps > 0 else 0.0
        stamps.append(max(0.0, float(time) - start) if time is not None else fallback)
    if fps <= 0 and duration > 0:
        fps = total / duration
    if duration <= 0 and fps > 0:
        duration = total / fps
    return frames, stamps, fps, duration


def load_video(source: VideoSource | VideoClip, max_frames: int = DEFAULT_MAX_FRAMES,
               with_audio: bool = False) -> VideoClip:
    """Read a video (a path or the file's bytes) as up to ``max_frames`` RGB frames sampled uniformly.

    With ``with_audio`` the first audio track is decoded to 16 kHz mono (``audio`` stays None when there is
    none). A :class:`VideoClip` passes through (thinned to ``max_frames`` when it has more). Raises
    :class:`MediaError` for a missing path, a directory, an empty or corrupt file, a file with no video
    stream and a video with no frames.
    """
    if max_frames < 1:
        raise MediaError(f"max_frames must be at least 1, got {max_frames}")
    if isinstance(source, VideoClip):
        if len(source.frames) <= max_frames:
            return source
        keep = sample_indices(len(source.frames), max_frames)
        return VideoClip([source.frames[i] for i in keep], [source.timestamps[i] for i in keep], source.fps,
                         source.duration, source.audio)
    name = _describe(source)
    if isinstance(source, (bytearray, memoryview)):
        source = bytes(source)
    if isinstance(source, bytes):
        if not source:
            raise MediaError("video bytes are empty (0 bytes)")
        src: Path | bytes = source
    elif isinstance(source, (str, os.PathLike)):
        src = Path(source)
        if not src.exists():
            raise MediaError(f"video file not found: {src}")
        if src.is_dir():
            raise MediaError(f"expected a video file, got a directory: {src}")
        if src.stat().st_size == 0:
            raise MediaError(f"video file is empty (0 bytes): {src}")
    else:
        raise MediaError(f"expected a path or bytes for a video, got {type(source).__name__}")
    try:
        frames, stamps, fps, duration = _read_frames(src, name, max_frames)
    except MediaError:
        raise
    except Exception as exc:  # PyAV/FFmpeg errors while decoding are not part of our API
        raise MediaError(f"could not decode video {name}: the file is corrupt or truncated ({exc})") from None
    audio = None
    if with_audio:
        with _open(src, name) as container:
            has_audio = bool(container.streams.audio)
        if has_audio:
            from .audio import load_audio

            audio = load_audio(src if isinstance(src, bytes) else str(src))
    log.debug("loaded video %s: %d frames of %.2f s at %.2f fps%s", name, len(frames), duration, fps,
              "" if audio is None else f", {audio.shape[0]} audio samples")
    return VideoClip(frames, stamps, fps, duration, audio)
