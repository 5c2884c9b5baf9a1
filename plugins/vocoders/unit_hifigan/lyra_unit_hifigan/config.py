"""CodeHiFiGAN configuration (fairseq's ``config.json``) and the receptive fields derived from it."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def same_padding(kernel: int, dilation: int = 1) -> int:
    """'Same' padding of a (dilated) conv, as HiFi-GAN's ``get_padding``."""
    return (kernel * dilation - dilation) // 2


class DurPredictorParams(BaseModel):
    """fairseq's ``VariancePredictor`` arguments (``dur_predictor_params`` in ``config.json``)."""

    model_config = ConfigDict(extra="ignore")

    encoder_embed_dim: int = 128
    var_pred_hidden_dim: int = 128
    var_pred_kernel_size: Literal[3] = Field(3, description="fairseq pads conv2 by 1, so only 3 keeps the length")
    var_pred_dropout: float = 0.5


class HifiGanArch(BaseModel):
    """Architecture fields of a CodeHiFiGAN ``config.json`` (defaults: the Lyra / mHuBERT km1000 vocoder)."""

    model_config = ConfigDict(protected_namespaces=())

    resblock: Literal["1", "2"] = "1"
    upsample_rates: list[int] = [5, 4, 4, 2, 2]
    upsample_kernel_sizes: list[int] = [11, 8, 8, 4, 4]
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: list[int] = [3, 7, 11]
    resblock_dilation_sizes: list[list[int]] = [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    num_embeddings: int = 1000
    embedding_dim: int = 128
    model_in_dim: int = 128
    sampling_rate: int = 16000
    dur_predictor_params: DurPredictorParams | None = DurPredictorParams()
    multispkr: bool | None = None
    num_speakers: int = 200
    embedder_params: dict[str, Any] | None = None
    embedder_dim: int = 256
    f0: bool = False
    f0_quant_num_bin: int = 0


class HifiGanConfig(HifiGanArch):
    """A whole fairseq vocoder ``config.json``: training keys (batch_size, fmin, ...) are ignored.

    Missing keys take fairseq's defaults where fairseq has one (``model_in_dim`` 80, no duration predictor).
    """

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    @classmethod
    def from_fairseq(cls, data: dict[str, Any]) -> "HifiGanConfig":
        """Parse a fairseq config dict, applying fairseq's defaults for absent optional keys."""
        data = {"model_in_dim": 80, "dur_predictor_params": None, **data}
        return cls.model_validate(data)

    def to_fairseq(self) -> dict[str, Any]:
        """Plain data in fairseq's ``config.json`` format."""
        return self.model_dump(mode="json")

    def validate_arch(self) -> list[tuple[str, str]]:
        """Consistency problems as ``(field, message)``; empty when the architecture can be built."""
        errs: list[tuple[str, str]] = []
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes) or not self.upsample_rates:
            errs.append(("upsample_kernel_sizes", f"needs one kernel per upsample rate {self.upsample_rates}, "
                                                  f"got {self.upsample_kernel_sizes}"))
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes) or not self.resblock_kernel_sizes:
            errs.append(("resblock_dilation_sizes", f"needs one dilation list per kernel size "
                                                    f"{self.resblock_kernel_sizes}, got {self.resblock_dilation_sizes}"))
        if self.upsample_initial_channel % (2 ** len(self.upsample_rates)):
            errs.append(("upsample_initial_channel", f"{self.upsample_initial_channel} must be divisible by "
                                                     f"2**{len(self.upsample_rates)}"))
        dp = self.dur_predictor_params
        if dp is not None and dp.encoder_embed_dim != self.embedding_dim:
            errs.append(("dur_predictor_params.encoder_embed_dim",
                         f"{dp.encoder_embed_dim} must equal embedding_dim {self.embedding_dim}"))
        if self.expected_in_dim != self.model_in_dim:
            errs.append(("model_in_dim", f"{self.model_in_dim} does not match the generator input: units "
                                         f"({self.embedding_dim}) + f0 + speaker = {self.expected_in_dim}"))
        return errs

    @property
    def has_speaker(self) -> bool:
        """Whether the generator takes a speaker input (fairseq only uses ``spkr`` when ``multispkr`` is set)."""
        return bool(self.multispkr)

    @property
    def f0_channels(self) -> int:
        """Input channels the f0 condition adds: an embedding when quantized, else one raw channel."""
        if not self.f0:
            return 0
        return self.embedding_dim if self.f0_quant_num_bin > 0 else 1

    @property
    def expected_in_dim(self) -> int:
        """Generator input channels: unit embedding, then f0, then speaker embedding (fairseq's order)."""
        return self.embedding_dim * (2 if self.has_speaker else 1) + self.f0_channels

    @property
    def hop_length(self) -> int:
        """Waveform samples per unit frame: the product of the upsample rates."""
        return math.prod(self.upsample_rates)


def _block_reach(cfg: HifiGanConfig) -> int:
    """Samples a residual-block group reaches on each side (the widest block; they are averaged)."""
    reach = 0
    for ks, ds in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
        per = sum(same_padding(ks, d) for d in ds) + (len(ds) * same_padding(ks) if cfg.resblock == "1" else 0)
        reach = max(reach, per)
    return reach


def receptive_field_frames(cfg: HifiGanConfig) -> tuple[int, int]:
    """Exact (left, right) receptive field of the generator in (duration-expanded) unit frames.

    Walks back from one output sample through conv_post (radius 3), each stage's residual blocks (radius
    sum of (kernel - 1) * dilation / 2 over the block's convs, the widest block) and its transposed conv
    (output t reads inputs ceil((t + p - k + 1) / u) .. floor((t + p) / u)), then conv_pre (radius 3), for
    every sample position inside a frame. Audio of frame j depends only on frames j - left .. j + right, so
    vocoding a window with that much context reproduces the offline output (see ``streaming.py``).
    """
    hop, block = cfg.hop_length, _block_reach(cfg)
    left = right = 0
    for s in range(hop):  # sample s of frame 0
        a, b = s - 3, s + 3  # conv_post
        for u, k in reversed(list(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))):
            a, b = a - block, b + block
            p = (k - u) // 2
            a, b = -((-(a + p - k + 1)) // u), (b + p) // u  # ceil, floor
        left, right = max(left, 3 - a), max(right, b + 3)
    return left, right


def duration_context_units(cfg: HifiGanConfig) -> int:
    """One-sided receptive field of the duration predictor in units (two stacked convs)."""
    p = cfg.dur_predictor_params
    if p is None:
        return 0
    return (p.var_pred_kernel_size - 1) // 2 + 1
