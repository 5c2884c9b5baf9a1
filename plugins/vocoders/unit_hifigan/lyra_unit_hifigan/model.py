"""The unit HiFi-GAN ("CodeHiFiGAN") generator in plain torch, with fairseq's module and parameter names.

Layout (``fairseq/models/text_to_speech/codehifigan.py`` + ``hifigan.py``): ``dict`` (unit embedding),
optional ``spkr`` (speaker embedding or linear projection of an external speaker vector), optional
``dur_predictor`` (``conv1.0``, ``ln1``, ``conv2.0``, ``ln2``, ``proj``), ``conv_pre``, ``ups.N``,
``resblocks.N.convs1.M`` / ``convs2.M`` (ResBlock1) or ``resblocks.N.convs.M`` (ResBlock2) and ``conv_post``.
Convolutions carry fairseq's legacy weight-norm parameters ``weight_g`` / ``weight_v`` until
:meth:`CodeHiFiGAN.remove_weight_norm` folds them into ``weight``, so a fairseq state dict loads with strict
key matching.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lyra_sdk.errors import LyraError

from .config import DurPredictorParams, HifiGanConfig, same_padding

LRELU_SLOPE = 0.1


class InvalidUnitsError(LyraError, ValueError):
    """Units (or speaker ids / conditioning features) that the vocoder cannot synthesize."""


def _legacy_weight_norm(module: nn.Module) -> None:
    """Replace ``module.weight`` by ``weight_g`` (norm over all dims but 0) and ``weight_v``, as fairseq stores it."""
    w = module.weight.detach()
    del module.weight
    module.weight_g = nn.Parameter(torch.norm_except_dim(w, 2, 0))
    module.weight_v = nn.Parameter(w.clone())


class _WNMixin:
    """Computes the effective weight from ``weight_g``/``weight_v`` until :meth:`remove_weight_norm` folds it."""

    def effective_weight(self) -> Tensor:
        params = self._parameters  # type: ignore[attr-defined]
        if "weight_v" in params:
            # torch's own weight-norm kernel: bit-identical to fairseq (torch.nn.utils.weight_norm).
            return torch._weight_norm(params["weight_v"], params["weight_g"], 0)
        return params["weight"]

    def remove_weight_norm(self) -> None:
        """Fold ``weight_g``/``weight_v`` into a plain ``weight`` parameter (no-op when already folded)."""
        if "weight_v" not in self._parameters:  # type: ignore[attr-defined]
            return
        w = self.effective_weight().detach()
        del self.weight_g, self.weight_v  # type: ignore[attr-defined]
        self.weight = nn.Parameter(w)  # type: ignore[attr-defined]


class WNConv1d(_WNMixin, nn.Conv1d):
    """``Conv1d`` with fairseq's weight-norm parameter names."""

    def __init__(self, *args: Any, weight_norm: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if weight_norm:
            _legacy_weight_norm(self)

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, T) -> (B, C_out, T')
        return self._conv_forward(x, self.effective_weight(), self.bias)


class WNConvTranspose1d(_WNMixin, nn.ConvTranspose1d):
    """``ConvTranspose1d`` with fairseq's weight-norm parameter names."""

    def __init__(self, *args: Any, weight_norm: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if weight_norm:
            _legacy_weight_norm(self)

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, T) -> (B, C_out, T * stride)
        return F.conv_transpose1d(x, self.effective_weight(), self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


def _masked(x: Tensor, mask: Tensor | None) -> Tensor:
    """Zero the padded frames so every conv sees the zeros a single unpadded sequence would see."""
    return x if mask is None else x * mask


class ResBlock1(nn.Module):
    """HiFi-GAN residual block type 1: pairs of (dilated conv, conv) with leaky ReLU and a residual."""

    def __init__(self, ch: int, kernel: int, dilations: list[int], weight_norm: bool = True) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(WNConv1d(ch, ch, kernel, 1, dilation=d, padding=same_padding(kernel, d),
                                             weight_norm=weight_norm) for d in dilations)
        self.convs2 = nn.ModuleList(WNConv1d(ch, ch, kernel, 1, dilation=1, padding=same_padding(kernel),
                                             weight_norm=weight_norm) for _ in dilations)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # (B, C, T) -> (B, C, T)
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = c1(_masked(F.leaky_relu(x, LRELU_SLOPE), mask))
            xt = c2(_masked(F.leaky_relu(xt, LRELU_SLOPE), mask))
            x = xt + x
        return x


class ResBlock2(nn.Module):
    """HiFi-GAN residual block type 2 (speech-resynthesis): one dilated conv per residual step."""

    def __init__(self, ch: int, kernel: int, dilations: list[int], weight_norm: bool = True) -> None:
        super().__init__()
        self.convs = nn.ModuleList(WNConv1d(ch, ch, kernel, 1, dilation=d, padding=same_padding(kernel, d),
                                            weight_norm=weight_norm) for d in dilations)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # (B, C, T) -> (B, C, T)
        for c in self.convs:
            x = c(_masked(F.leaky_relu(x, LRELU_SLOPE), mask)) + x
        return x


class VariancePredictor(nn.Module):
    """fairseq's duration predictor: (conv, ReLU, LayerNorm) x 2 then a linear layer; dropout is inactive."""

    def __init__(self, p: DurPredictorParams) -> None:
        super().__init__()
        k, h = p.var_pred_kernel_size, p.var_pred_hidden_dim
        self.conv1 = nn.Sequential(nn.Conv1d(p.encoder_embed_dim, h, k, padding=(k - 1) // 2), nn.ReLU())
        self.ln1 = nn.LayerNorm(h)
        self.conv2 = nn.Sequential(nn.Conv1d(h, h, k, padding=1), nn.ReLU())
        self.ln2 = nn.LayerNorm(h)
        self.proj = nn.Linear(h, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, T, C) embeddings, optional (B, 1, T) float mask -> (B, T) log(duration + 1)."""
        x = self.ln1(self.conv1(_masked(x.transpose(1, 2), mask)).transpose(1, 2))  # (B, T, H)
        x = self.ln2(self.conv2(_masked(x.transpose(1, 2), mask)).transpose(1, 2))  # (B, T, H)
        return self.proj(x).squeeze(2)


def _repeat_to(x: Tensor, n: int) -> Tensor:
    """(B, C, T) -> (B, C, n), each frame repeated n / T times (fairseq's ``_upsample``)."""
    if n % x.shape[2]:
        raise InvalidUnitsError(f"cannot align a condition of length {x.shape[2]} with {n} frames: "
                                f"one length must be a multiple of the other")
    return torch.repeat_interleave(x, n // x.shape[2], dim=2)


def _frame_mask(lengths: Tensor | None, t: int, dtype: torch.dtype) -> Tensor | None:
    if lengths is None:
        return None
    return (torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]).to(dtype)[:, None, :]  # (B, 1, T)


class CodeHiFiGAN(nn.Module):
    """The unit-to-waveform generator. Build from a :class:`HifiGanConfig`; call on (B, T) unit ids."""

    def __init__(self, cfg: HifiGanConfig, weight_norm: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.dict = nn.Embedding(cfg.num_embeddings, cfg.embedding_dim)
        if cfg.multispkr and not cfg.embedder_params:
            self.spkr: nn.Module | None = nn.Embedding(cfg.num_speakers, cfg.embedding_dim)
        elif cfg.embedder_params:
            self.spkr = nn.Linear(cfg.embedder_dim, cfg.embedding_dim)
        else:
            self.spkr = None
        self.dur_predictor = VariancePredictor(cfg.dur_predictor_params) if cfg.dur_predictor_params else None
        self.f0_quant_embed = (nn.Embedding(cfg.f0_quant_num_bin, cfg.embedding_dim)
                               if cfg.f0 and cfg.f0_quant_num_bin > 0 else None)
        c0 = cfg.upsample_initial_channel
        self.conv_pre = WNConv1d(cfg.model_in_dim, c0, 7, 1, padding=3, weight_norm=weight_norm)
        self.ups = nn.ModuleList(
            WNConvTranspose1d(c0 // 2**i, c0 // 2 ** (i + 1), k, u, padding=(k - u) // 2, weight_norm=weight_norm)
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)))
        block = ResBlock1 if cfg.resblock == "1" else ResBlock2
        self.resblocks = nn.ModuleList(
            block(c0 // 2 ** (i + 1), k, list(d), weight_norm=weight_norm)
            for i in range(len(self.ups)) for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes))
        self.conv_post = WNConv1d(c0 // 2 ** len(self.ups), 1, 7, 1, padding=3, weight_norm=weight_norm)
        self.num_kernels = len(cfg.resblock_kernel_sizes)

    @property
    def hop_length(self) -> int:
        """Waveform samples per (duration-expanded) unit frame."""
        return self.cfg.hop_length

    def remove_weight_norm(self) -> "CodeHiFiGAN":
        """Fold every weight-norm pair into a plain weight, as fairseq does before inference. Returns self."""
        for m in self.modules():
            if isinstance(m, _WNMixin):
                m.remove_weight_norm()
        return self

    def check_units(self, units: Tensor, lengths: Tensor | None = None) -> None:
        """Raise :class:`InvalidUnitsError` for an empty batch or ids outside ``0..num_embeddings-1``."""
        if units.dim() != 2 or units.shape[1] == 0:
            raise InvalidUnitsError(f"expected a non-empty (batch, time) unit tensor, got shape {tuple(units.shape)}")
        if units.dtype not in (torch.int64, torch.int32):
            raise InvalidUnitsError(f"units must be integer ids, got dtype {units.dtype}")
        if lengths is not None and (lengths.shape != units.shape[:1] or int(lengths.min()) < 1
                                    or int(lengths.max()) > units.shape[1]):
            raise InvalidUnitsError(f"lengths must hold one value in 1..{units.shape[1]} per row, "
                                    f"got {lengths.tolist()}")
        valid = units if lengths is None else units[_frame_mask(lengths, units.shape[1], torch.float)[:, 0] > 0]
        if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= self.cfg.num_embeddings):
            bad = valid[(valid < 0) | (valid >= self.cfg.num_embeddings)][0].item()
            raise InvalidUnitsError(f"unit id {bad} is out of range: this vocoder knows units 0.."
                                    f"{self.cfg.num_embeddings - 1}")

    def predict_durations(self, units: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, T) units -> (B, T) long repeat counts round(exp(pred) - 1) clamped to >= 1; 0 on padding."""
        if self.dur_predictor is None:
            raise InvalidUnitsError("duration prediction requested but this vocoder has no dur_predictor")
        mask = _frame_mask(lengths, units.shape[1], self.dict.weight.dtype)
        log_dur = self.dur_predictor(self.dict(units), mask)  # (B, T)
        dur = torch.clamp(torch.round(torch.exp(log_dur) - 1).long(), min=1)
        return dur if mask is None else dur * mask[:, 0].long()

    def _speaker(self, spkr: Tensor | None, batch: int) -> Tensor | None:
        """Speaker ids (B,) / (B, 1) or external embeddings (B, embedder_dim) -> (B, embedding_dim, 1)."""
        if not self.cfg.has_speaker:
            if spkr is not None:
                raise InvalidUnitsError("this vocoder is single-speaker (config has no multispkr): drop `spkr`")
            return None
        if spkr is None:
            raise InvalidUnitsError("this multi-speaker vocoder needs a speaker input `spkr`")
        if isinstance(self.spkr, nn.Embedding):
            ids = spkr.reshape(-1)
            if ids.numel() != batch or int(ids.min()) < 0 or int(ids.max()) >= self.cfg.num_speakers:
                raise InvalidUnitsError(f"expected {batch} speaker id(s) in 0..{self.cfg.num_speakers - 1}, "
                                        f"got {ids.tolist()}")
            return self.spkr(ids)[:, :, None]
        return self.spkr(spkr.reshape(batch, -1))[:, :, None]

    def embed(self, units: Tensor, spkr: Tensor | None = None, f0: Tensor | None = None) -> Tensor:
        """(B, T) frame-level units -> (B, model_in_dim, T') generator input: units, f0, speaker channels.

        ``f0`` is (B, T_f): floats, or bin ids when the config quantizes f0 (``f0_quant_num_bin``). As in
        fairseq, the shorter of units and f0 is repeated to the other's length (which must be a multiple).
        """
        x = self.dict(units).transpose(1, 2)  # (B, D, T)
        if self.cfg.f0:
            if f0 is None:
                raise InvalidUnitsError("this vocoder is conditioned on f0 (config f0: true): pass `f0`")
            if self.f0_quant_embed is not None:
                f = self.f0_quant_embed(f0.long()).transpose(1, 2)  # (B, D, T_f)
            else:
                f = f0.to(x.dtype)[:, None, :]  # (B, 1, T_f)
            n = max(x.shape[2], f.shape[2])
            x = torch.cat([_repeat_to(x, n), _repeat_to(f, n)], dim=1)
        elif f0 is not None:
            raise InvalidUnitsError("this vocoder has no f0 input (config f0: false): drop `f0`")
        s = self._speaker(spkr, units.shape[0])
        if s is not None:
            x = torch.cat([x, s.expand(-1, -1, x.shape[2])], dim=1)
        return x  # (B, model_in_dim, T')

    def generate(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, model_in_dim, T) features, optional (B,) frame lengths -> (B, T * hop) waveform in [-1, 1]."""
        mask = _frame_mask(lengths, x.shape[2], x.dtype)
        x = self.conv_pre(_masked(x, mask))  # (B, C0, T)
        for i, up in enumerate(self.ups):
            x = up(_masked(F.leaky_relu(x, LRELU_SLOPE), mask))  # (B, C0 / 2^(i+1), T_i)
            if lengths is not None:
                lengths = lengths * self.cfg.upsample_rates[i]
                mask = _frame_mask(lengths, x.shape[2], x.dtype)
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            xs = blocks[0](x, mask)
            for b in blocks[1:]:
                xs = xs + b(x, mask)
            x = xs / self.num_kernels
        x = self.conv_post(_masked(F.leaky_relu(x), mask))  # fairseq uses the default slope 0.01 here
        return torch.tanh(x)[:, 0]  # (B, S)

    def forward(self, units: Tensor, lengths: Tensor | None = None, dur_prediction: bool = False,
                spkr: Tensor | None = None, f0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, T) units, optional (B,) lengths -> waveform (B, S) and (B,) sample lengths (padding is zero)."""
        self.check_units(units, lengths)
        if lengths is not None:  # padding ids may be anything (-1, ...): embed them as unit 0, masked later
            units = units.masked_fill(_frame_mask(lengths, units.shape[1], torch.float)[:, 0] == 0, 0)
        if dur_prediction:
            dur = self.predict_durations(units, lengths)  # (B, T)
            if lengths is None and units.shape[0] == 1:
                units = torch.repeat_interleave(units, dur[0], dim=1)
            else:
                rows = [torch.repeat_interleave(u, d) for u, d in zip(units, dur)]
                lengths = torch.tensor([len(r) for r in rows], device=units.device)
                units = nn.utils.rnn.pad_sequence(rows, batch_first=True)
        x = self.embed(units, spkr, f0)  # (B, model_in_dim, T')
        if lengths is not None and x.shape[2] != units.shape[1]:  # units repeated to the f0 rate
            lengths = lengths * (x.shape[2] // units.shape[1])
        wav = self.generate(x, lengths)
        if lengths is None:
            return wav, torch.full((wav.shape[0],), wav.shape[1], device=wav.device)
        sample_lengths = lengths * self.hop_length
        keep = (torch.arange(wav.shape[1], device=wav.device)[None, :] < sample_lengths[:, None]).to(wav.dtype)
        return wav * keep, sample_lengths
