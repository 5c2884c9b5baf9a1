"""The ``whisper`` encoder plugin: 16 kHz speech or sound -> 30 s windows -> log-mel -> Whisper encoder frames.

A clip of ``n`` samples becomes exactly ceil(n / 480000) windows (an exact multiple of 30 s adds no silent
window); each window gives 1500 frames (50 Hz), of which ceil(valid_samples / 320) are marked valid.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from lyra_sdk.errors import CheckpointError, ConfigError, MediaError
from lyra_sdk.hookspecs import Register, hookimpl
from lyra_sdk.paths import resolve_path
from lyra_sdk.interfaces import Encoder, Features, MediaEmbeddings, Modality, PluginOptions

from .convert import load_checkpoint, load_strict
from .features import (SAMPLE_RATE, WINDOW_FRAMES, WINDOW_SAMPLES, WINDOW_SECONDS, log_mel_spectrogram, num_windows,
                       split_windows, valid_frames)
from .model import WhisperEncoderConfig, WhisperEncoderModel

log = logging.getLogger(__name__)

_ARCH_FIELDS = tuple(WhisperEncoderConfig.__dataclass_fields__)


class WhisperEncoder(Encoder):
    """Whisper's audio encoder (any size: tiny to large-v3/turbo) as a Lyra speech/sound encoder.

    Weights come from ``path`` (an HF folder, an openai-whisper ``.pt`` or a CTranslate2 folder); without a
    path the encoder is randomly initialised with the architecture fields of the options.
    """

    class Options(PluginOptions):
        """Options of the ``whisper`` encoder."""

        runtime_fields: ClassVar[frozenset[str]] = frozenset({"max_batch_windows", "crop_from_layer"})

        path: str | None = Field(None, description="checkpoint folder or file; None: random init from the fields below")
        format: Literal["auto", "hf", "openai", "ct2"] = Field("auto", description="checkpoint format; auto detects it")
        num_mel_bins: Literal[80, 128] = 80
        d_model: int = Field(384, gt=0)
        encoder_layers: int = Field(4, gt=0)
        encoder_attention_heads: int = Field(6, gt=0)
        encoder_ffn_dim: int = Field(1536, gt=0)
        max_source_positions: int = Field(1500, gt=0)
        max_batch_windows: int = Field(8, gt=0, description="30 s windows encoded per forward chunk (bounds memory)")
        crop_from_layer: int | None = Field(
            None, ge=0, description="layers from this index on run on each window's valid frames only (the silent "
                                    "padding of a short clip is neither attended to nor computed); None: every layer "
                                    "sees the whole 30 s window, as Whisper was trained. Cuts the cost of those "
                                    "layers for short clips; the weights must have been trained that way")

    modalities: ClassVar[frozenset[Modality]] = frozenset({Modality.SPEECH, Modality.SOUND})
    window_seconds: ClassVar[float | None] = float(WINDOW_SECONDS)

    def __init__(self, options: Options, config: WhisperEncoderConfig) -> None:
        super().__init__()
        if options.crop_from_layer is not None and options.crop_from_layer >= config.encoder_layers:
            raise ConfigError([("crop_from_layer", f"must be below encoder_layers ({config.encoder_layers}), "
                                                   f"got {options.crop_from_layer}")])
        self.options = options
        self.config = config
        self.encoder = WhisperEncoderModel(config)  # state-dict keys: encoder.* as in transformers' WhisperModel
        self.output_dim = config.d_model

    @classmethod
    def from_options(cls, options: Options) -> "WhisperEncoder":
        """Build the encoder; with ``options.path`` the architecture and weights come from the checkpoint."""
        if options.path is None:
            if options.max_source_positions * 2 != WINDOW_FRAMES:
                raise ConfigError([("max_source_positions", f"must be {WINDOW_FRAMES // 2} (30 s windows), "
                                                            f"got {options.max_source_positions}")])
            try:
                config = WhisperEncoderConfig(**{k: getattr(options, k) for k in _ARCH_FIELDS})
            except ValueError as exc:
                raise ConfigError([("encoder_attention_heads", str(exc))]) from exc
            log.info("whisper encoder: random init %s", config)
            return cls(options, config)
        config, state_dict, fmt = load_checkpoint(resolve_path(options.path), options.format)
        clashes = [f"{k}={getattr(options, k)} but the checkpoint has {getattr(config, k)}"
                   for k in _ARCH_FIELDS if k in options.model_fields_set and getattr(options, k) != getattr(config, k)]
        if clashes:
            raise CheckpointError(f"{options.path}: options disagree with the checkpoint: {'; '.join(clashes)}")
        if config.num_mel_bins not in (80, 128):
            raise CheckpointError(f"{options.path}: num_mel_bins must be 80 or 128, got {config.num_mel_bins}")
        if config.max_source_positions * 2 != WINDOW_FRAMES:
            raise CheckpointError(f"{options.path}: max_source_positions must be {WINDOW_FRAMES // 2} for 30 s "
                                  f"windows, got {config.max_source_positions}")
        module = cls(options, config)
        load_strict(module.encoder, state_dict, f"{options.path} ({fmt})")
        return module

    def saved_options(self) -> Options:
        """Architecture-only options (no path): rebuilds this encoder without the original checkpoint."""
        return self.Options(max_batch_windows=self.options.max_batch_windows,
                            crop_from_layer=self.options.crop_from_layer, **self.config.as_dict())

    @property
    def n_mels(self) -> int:
        """Mel bins of the input features (80, or 128 for large-v3 and turbo)."""
        return self.config.num_mel_bins

    def _clip(self, item: Any, index: int) -> np.ndarray:
        if isinstance(item, torch.Tensor):
            item = item.detach().cpu().numpy()
        if not isinstance(item, np.ndarray):
            raise MediaError(f"whisper encoder: audio item {index} must be a numpy array of 16 kHz mono samples, "
                             f"got {type(item).__name__} (use lyra_sdk.media.load_audio)")
        if item.ndim != 1:
            raise MediaError(f"whisper encoder: audio item {index} must be 1-D (mono samples), got shape {item.shape}")
        if item.shape[0] == 0:
            raise MediaError(f"whisper encoder: audio item {index} is empty (0 samples)")
        clip = item.astype(np.float32, copy=False)
        if not np.isfinite(clip).all():
            raise MediaError(f"whisper encoder: audio item {index} contains non-finite samples")
        return clip

    def featurize(self, media: Sequence[Any]) -> Features:
        """16 kHz mono clips -> ``input_features`` (N, n_mels, 3000), one row per 30 s window.

        ``row_item[n]`` is the clip of window ``n``; ``valid_lengths[n]`` its real encoder frames (<= 1500).
        """
        windows: list[np.ndarray] = []
        row_item: list[int] = []
        valid_lengths: list[int] = []
        for index, item in enumerate(media):
            chunks, valid = split_windows(self._clip(item, index))  # (W, 480000), [W]
            windows.append(chunks)
            row_item += [index] * len(valid)
            valid_lengths += [valid_frames(v, self.config.max_source_positions) for v in valid]
        if not windows:
            empty = torch.zeros(0, self.n_mels, WINDOW_FRAMES)
            return Features({"input_features": empty}, [], [], {"sample_rate": SAMPLE_RATE})
        audio = torch.from_numpy(np.concatenate(windows))  # (N, 480000)
        step = self.options.max_batch_windows  # the STFT of many windows at once is large: bound it
        mels = [log_mel_spectrogram(audio[i:i + step], self.n_mels) for i in range(0, audio.shape[0], step)]
        features = torch.cat(mels)  # (N, n_mels, 3000)
        return Features({"input_features": features}, row_item, valid_lengths, {"sample_rate": SAMPLE_RATE})

    def featurize_batches(self, media: Sequence[Any]) -> Iterator[Features]:
        """Windows of ``max_batch_windows`` at a time, cut from the clips lazily (no padded copy of long audio)."""
        clips = [self._clip(item, index) for index, item in enumerate(media)]
        todo = [(i, w) for i, c in enumerate(clips) for w in range(num_windows(len(c)))]
        step = self.options.max_batch_windows
        for start in range(0, len(todo), step):
            group = todo[start : start + step]
            audio = torch.zeros(len(group), WINDOW_SAMPLES)  # (n, 480000)
            valid = []
            for row, (i, w) in enumerate(group):
                piece = clips[i][w * WINDOW_SAMPLES : (w + 1) * WINDOW_SAMPLES]
                audio[row, : len(piece)] = torch.from_numpy(piece)
                valid.append(valid_frames(len(piece), self.config.max_source_positions))
            feats = log_mel_spectrogram(audio, self.n_mels)  # (n, n_mels, 3000)
            yield Features({"input_features": feats}, [i for i, _ in group], valid, {"sample_rate": SAMPLE_RATE})

    def forward(self, features: Features) -> MediaEmbeddings:
        """``input_features`` (N, n_mels, 3000) -> embeddings (N, 1500, d_model), mask (N, 1500)."""
        return self.forward_top(self.forward_stem(features, 0), 0)

    def top_modules(self, n: int) -> list[torch.nn.Module]:
        """The last ``n`` transformer layers and the final LayerNorm (what ``trainable: top`` trains)."""
        layers = self.config.encoder_layers
        if not 0 < n <= layers:
            raise ValueError(f"top_layers must be 1..{layers} (this Whisper encoder has {layers} layers), got {n}")
        return [*self.encoder.layers[layers - n :], self.encoder.layer_norm]

    def forward_stem(self, features: Features, n: int) -> MediaEmbeddings:
        """``input_features`` -> hidden states (N, 1500, d_model) entering the last ``n`` layers, mask (N, 1500)."""
        x = features.tensors["input_features"]
        weight = self.encoder.conv1.weight
        x = x.to(device=weight.device, dtype=weight.dtype)  # (N, n_mels, 3000)
        frames = x.shape[-1] // 2
        positions = torch.arange(frames, device=x.device)
        if features.valid_lengths is None:
            lengths = torch.full((x.shape[0],), frames, device=x.device)
        else:
            lengths = torch.tensor(features.valid_lengths, device=x.device, dtype=torch.long).reshape(-1)  # (N,)
        mask = positions[None, :] < lengths[:, None]  # (N, 1500)
        step, crop = self.options.max_batch_windows, self.options.crop_from_layer
        if x.shape[0] == 0:
            out = x.new_zeros(0, frames, self.output_dim)
        else:
            out = torch.cat([self.encoder.stem(x[i:i + step], n, lengths[i:i + step], crop)
                             for i in range(0, x.shape[0], step)])  # (N, T, D)
        return MediaEmbeddings(embeddings=out, mask=mask)

    def forward_top(self, hidden: MediaEmbeddings, n: int) -> MediaEmbeddings:
        """Hidden states from :meth:`forward_stem` -> the encoder output (the last ``n`` layers + LayerNorm)."""
        x, step, crop = hidden.embeddings, self.options.max_batch_windows, self.options.crop_from_layer
        lengths = hidden.mask.sum(dim=1)  # valid frames form a prefix of each row
        out = (torch.cat([self.encoder.top(x[i:i + step], n, lengths[i:i + step], crop)
                          for i in range(0, x.shape[0], step)]) if len(x) else x)
        return MediaEmbeddings(embeddings=out, mask=hidden.mask)

    def cache_signature(self, top: int | None) -> str:
        """``crop_from_layer`` when it changes the cached rows (the whole output, or the stem below ``top``)."""
        crop = self.options.crop_from_layer
        if crop is None or (top is not None and crop >= self.config.encoder_layers - top):
            return ""
        return f"crop_from_layer={crop}"


@hookimpl
def register_encoders(register: Register) -> None:
    """Register :class:`WhisperEncoder` as ``whisper``."""
    register("whisper", WhisperEncoder)
