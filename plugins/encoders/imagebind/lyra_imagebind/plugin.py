"""The ``imagebind-audio`` encoder plugin: 16 kHz sound -> 2 s clips -> Kaldi log-mel -> ImageBind's audio branch.

Every clip is one row. ``output: tokens`` gives the trunk's tokens of each clip (cls + 228 patches for
``imagebind_huge``, width 768), for a projector such as ``mlp2x_gelu``; ``output: embedding`` gives ImageBind's
1024-d audio embedding of each clip (L2-normalised and scaled by 20, exactly ImageBind's per-clip output) as
one token. The rows of one recording are concatenated in order by the model, so a ``<sound>`` becomes
``clips * 229`` tokens (tokens) or ``clips`` tokens (embedding).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from lyra_sdk.errors import CheckpointError, ConfigError, MediaError
from lyra_sdk.hookspecs import Register, hookimpl
from lyra_sdk.interfaces import Encoder, Features, MediaEmbeddings, Modality, PluginOptions
from lyra_sdk.paths import resolve_path

from lyra_sdk.weights import load_strict

from .checkpoint import infer_config, read_audio_state_dict, to_checkpoint_key
from .fbank import FBANK_MEAN, FBANK_STD, SAMPLE_RATE, audio_to_fbanks
from .model import ImageBindAudio, ImageBindAudioConfig

log = logging.getLogger(__name__)

_ARCH = ("embed_dim", "num_blocks", "num_heads", "mlp_dim", "out_embed_dim", "num_mel_bins", "target_length",
         "kernel_size", "stride")
_FRAME, _SHIFT = 400, 160  # 25 ms / 10 ms at 16 kHz


class ImageBindAudioEncoder(Encoder):
    """ImageBind's audio encoder (``imagebind_huge`` by default) as a Lyra ``sound`` encoder."""

    class Options(PluginOptions):
        """Options of the ``imagebind-audio`` encoder."""

        path: str | None = Field(None, description="ImageBind checkpoint (imagebind_huge.pth, or .safetensors with "
                                                   "the same keys); None: random init from the fields below")
        output: Literal["tokens", "embedding"] = Field("tokens", description="per-token trunk outputs (width "
                                                       "embed_dim) or one normalised embedding per clip")
        final_norm: bool = Field(True, description="tokens: apply the head's LayerNorm (the trunk has no final norm)")
        clips: int = Field(3, gt=0, description="clips sampled evenly across each recording (ImageBind: 3)")
        clip_seconds: float = Field(2.0, gt=0, description="clip length in seconds (ImageBind: 2)")
        fbank_mean: float = FBANK_MEAN
        fbank_std: float = Field(FBANK_STD, gt=0)
        embed_dim: int = Field(768, gt=0)
        num_blocks: int = Field(12, gt=0)
        num_heads: int = Field(12, gt=0)
        mlp_dim: int = Field(3072, gt=0)
        out_embed_dim: int = Field(1024, gt=0)
        num_mel_bins: int = Field(128, gt=0)
        target_length: int = Field(204, gt=0, description="fbank frames per clip after padding/cutting")
        kernel_size: int = Field(16, gt=0)
        stride: int = Field(10, gt=0)
        max_batch_clips: int = Field(16, gt=0, description="clips per forward chunk (bounds memory)")

    modalities: ClassVar[frozenset[Modality]] = frozenset({Modality.SOUND})

    def __init__(self, options: Options, config: ImageBindAudioConfig) -> None:
        super().__init__()
        self.options = options
        self.config = config
        self.model = ImageBindAudio(config)
        self.output_dim = config.embed_dim if options.output == "tokens" else config.out_embed_dim
        frames = 1 + (int(options.clip_seconds * SAMPLE_RATE) - _FRAME) // _SHIFT
        if abs(config.target_length - frames) > 0.2 * max(frames, 1):
            log.warning("imagebind-audio: a %.2f s clip gives %d fbank frames but target_length is %d (ImageBind: "
                        "2 s -> 198 frames padded to 204)", options.clip_seconds, frames, config.target_length)

    @classmethod
    def from_options(cls, options: Options) -> "ImageBindAudioEncoder":
        """Build the encoder; with ``options.path`` the architecture (but heads and stride) and weights come from
        the checkpoint, and explicitly set fields that disagree with it are an error."""
        if options.path is None:
            try:
                config = ImageBindAudioConfig(**{k: getattr(options, k) for k in _ARCH})
            except ValueError as exc:
                raise ConfigError([("imagebind-audio.options", str(exc))]) from None
            log.info("imagebind-audio: random init %s", config)
            return cls(options, config)
        path = resolve_path(options.path)
        sd = read_audio_state_dict(path)
        config = infer_config(sd, options.num_heads, options.stride, options.num_mel_bins, options.target_length,
                              str(path))
        clashes = [f"{k}={getattr(options, k)} but the checkpoint has {getattr(config, k)}"
                   for k in _ARCH if k in options.model_fields_set and getattr(options, k) != getattr(config, k)]
        if clashes:
            raise CheckpointError(f"{path}: options disagree with the checkpoint: {'; '.join(clashes)}")
        module = cls(options, config)
        load_strict(module.model, sd, str(path), key_name=to_checkpoint_key)
        return module

    def saved_options(self) -> Options:
        """Architecture-only options (no path): rebuilds this encoder without the checkpoint."""
        arch = {k: v for k, v in self.config.as_dict().items() if k in _ARCH}
        return self.options.model_copy(update={"path": None, **arch})

    @property
    def tokens_per_clip(self) -> int:
        """Output tokens per clip: cls + patches (tokens) or 1 (embedding)."""
        return self.config.num_tokens if self.options.output == "tokens" else 1

    def _clip(self, item: Any, index: int) -> Tensor:
        if isinstance(item, Tensor):
            item = item.detach().cpu().numpy()
        if not isinstance(item, np.ndarray):
            raise MediaError(f"imagebind-audio: sound item {index} must be a numpy array of 16 kHz mono samples, "
                             f"got {type(item).__name__} (use lyra_sdk.media.load_audio)")
        if item.ndim != 1:
            raise MediaError(f"imagebind-audio: sound item {index} must be 1-D (mono samples), got shape {item.shape}")
        if item.shape[0] < _FRAME:
            raise MediaError(f"imagebind-audio: sound item {index} has {item.shape[0]} samples; at least {_FRAME} "
                             "(25 ms at 16 kHz, one fbank frame) are needed")
        clip = torch.from_numpy(np.ascontiguousarray(item, dtype=np.float32))
        if not torch.isfinite(clip).all():
            raise MediaError(f"imagebind-audio: sound item {index} contains non-finite samples")
        return clip

    def featurize(self, media: Sequence[Any]) -> Features:
        """16 kHz mono clips -> ``fbank`` (N, 1, num_mel_bins, target_length), ``clips`` rows per recording."""
        o, c = self.options, self.config
        rows: list[Tensor] = []
        row_item: list[int] = []
        for index, item in enumerate(media):
            fb = audio_to_fbanks(self._clip(item, index), o.clips, o.clip_seconds, c.num_mel_bins, c.target_length,
                                 o.fbank_mean, o.fbank_std)  # (clips, 1, M, T)
            rows.append(fb)
            row_item += [index] * fb.shape[0]
        fbank = torch.cat(rows) if rows else torch.zeros(0, 1, c.num_mel_bins, c.target_length)
        return Features({"fbank": fbank}, row_item, None, {"sample_rate": SAMPLE_RATE})

    def featurize_batches(self, media: Sequence[Any]) -> Iterator[Features]:
        """Recordings in groups of about ``max_batch_clips`` clips (their ``row_item`` index ``media``)."""
        per_group = max(1, self.options.max_batch_clips // self.options.clips)
        for start in range(0, len(media), per_group):
            feats = self.featurize(media[start : start + per_group])
            yield Features(feats.tensors, [start + i for i in feats.row_item], None, feats.extras)

    def forward(self, features: Features) -> MediaEmbeddings:
        """``fbank`` (N, 1, M, T) -> (N, 1 + P, embed_dim) tokens or (N, 1, out_embed_dim) embeddings; mask all True."""
        x = features.tensors["fbank"]
        weight = self.model.preprocessor.rgbt_stem.proj.weight
        x = x.to(device=weight.device, dtype=weight.dtype)
        step = self.options.max_batch_clips
        pieces = [self._encode(x[i : i + step]) for i in range(0, x.shape[0], step)]
        out = torch.cat(pieces) if pieces else x.new_zeros(0, self.tokens_per_clip, self.output_dim)
        mask = torch.ones(out.shape[:2], dtype=torch.bool, device=out.device)
        return MediaEmbeddings(embeddings=out, mask=mask)

    def _encode(self, fbank: Tensor) -> Tensor:
        tokens = self.model.tokens(fbank)  # (n, 1 + P, D)
        if self.options.output == "embedding":
            return self.model.embed_tokens(tokens)[:, None]  # (n, 1, out_embed_dim)
        return self.model.head[0](tokens) if self.options.final_norm else tokens

    @torch.no_grad()
    def embed(self, media: Sequence[Any]) -> Tensor:
        """ImageBind's audio embedding of each recording, (len(media), out_embed_dim): the mean of its clips'
        embeddings, as ``ImageBindModel.forward`` returns for ``ModalityType.AUDIO``."""
        feats = self.featurize(media)
        weight = self.model.preprocessor.rgbt_stem.proj.weight
        per_clip = self.model(feats.tensors["fbank"].to(weight))  # (N, out_embed_dim)
        items = torch.tensor(feats.row_item, device=per_clip.device)
        return torch.stack([per_clip[items == i].mean(0) for i in range(len(media))])


@hookimpl
def register_encoders(register: Register) -> None:
    """Register :class:`ImageBindAudioEncoder` as ``imagebind-audio``."""
    register("imagebind-audio", ImageBindAudioEncoder)
