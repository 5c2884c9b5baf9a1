"""Loading raw media by modality: paths (or bytes) become what encoders' ``featurize`` takes."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import MediaError
from ..interfaces import Modality


def load_media(modality: Modality, item: Any, max_frames: int = 16) -> Any:
    """A path / bytes -> loaded media; already-loaded media (arrays, images) pass through.

    Speech and sound become 16 kHz mono float32 arrays; images become RGB PIL images; videos become
    :class:`~lyra_sdk.media.video.VideoClip` with up to ``max_frames`` uniformly sampled frames.
    """
    if modality in (Modality.SPEECH, Modality.SOUND):
        if isinstance(item, np.ndarray):
            if item.ndim != 1 or item.size == 0:
                raise MediaError(f"{modality.value} array must be 1-D 16 kHz mono with samples, got shape {item.shape}")
            return item.astype(np.float32, copy=False)
        if isinstance(item, (str, bytes, os.PathLike)):
            from .audio import load_audio

            return load_audio(item)
        raise MediaError(f"cannot use a {type(item).__name__} as {modality.value}: give a path or a 1-D numpy array")
    if modality is Modality.IMAGE:
        from .image import load_image

        return load_image(item)
    if modality is Modality.VIDEO:
        from .video import load_video

        return load_video(item, max_frames=max_frames)
    raise MediaError(f"no loader for {modality.value}")
