"""The ``unit-hifigan`` vocoder plugin: discrete speech units -> 16 kHz waveform, offline or streaming."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from pydantic import ConfigDict, Field
from torch import Tensor

from lyra_sdk.paths import resolve_path
from lyra_sdk.errors import ConfigError
from lyra_sdk.hookspecs import Register, hookimpl
from lyra_sdk.interfaces import PluginOptions, Vocoder

from .checkpoint import config_from_dict, load_any, load_config
from .config import HifiGanArch, HifiGanConfig, receptive_field_frames
from .model import CodeHiFiGAN, InvalidUnitsError
from .streaming import StreamingVocoder

_ARCH_FIELDS = tuple(HifiGanArch.model_fields)


def _as_unit_tensor(units: Any) -> Tensor:
    """A list / tuple / array / tensor of unit ids -> (T,) int64 tensor; empty input is refused."""
    try:
        t = torch.as_tensor(units)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InvalidUnitsError(f"units must be a sequence of integer ids, got {type(units).__name__} ({exc})") from None
    if t.numel() == 0:
        raise InvalidUnitsError("no units to vocode: the unit sequence is empty")
    if t.dim() != 1 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise InvalidUnitsError(f"units must be a flat sequence of integer ids, got shape {tuple(t.shape)} "
                                f"and dtype {t.dtype}")
    return t.long()


class UnitHifiGanVocoder(Vocoder):
    """Unit HiFi-GAN (fairseq CodeHiFiGAN): ``num_units`` discrete units -> waveform at ``sample_rate`` Hz.

    Weights come from a fairseq checkpoint (``checkpoint`` + ``config``), from our ``.safetensors`` format,
    or are random (architecture from ``config`` or the inline fields). Weight norm is folded at build time,
    so the state dict holds plain ``weight`` tensors under ``generator.``.
    """

    class Options(PluginOptions, HifiGanArch):
        """Where the weights come from, the architecture when there is no ``config``, and inference knobs."""

        model_config = ConfigDict(extra="forbid", protected_namespaces=())

        checkpoint: str | None = Field(None, description="fairseq checkpoint (g_00500000) or our .safetensors")
        config: str | None = Field(None, description="fairseq config.json; else the inline architecture fields")
        dur_prediction: bool = Field(False, description="repeat each unit by the predicted duration")
        speaker: int | None = Field(None, description="speaker id of a multi-speaker (multispkr) vocoder")
        stream_context_units: int | None = Field(
            None, ge=0, description="frames of left/right context per streamed chunk; None = the exact receptive field")
        stream_chunk_units: int = Field(25, ge=1, description="minimum new frames vocoded per streaming step")

    def __init__(self, generator: CodeHiFiGAN, options: "UnitHifiGanVocoder.Options") -> None:
        super().__init__()
        self.generator = generator
        self.options = options
        self.sample_rate = generator.cfg.sampling_rate
        self.num_units = generator.cfg.num_embeddings

    @classmethod
    def from_options(cls, options: "UnitHifiGanVocoder.Options") -> "UnitHifiGanVocoder":
        """Build from options: load ``checkpoint`` / ``config`` if given, else random weights; fold weight norm."""
        explicit = {f: getattr(options, f) for f in _ARCH_FIELDS if f in options.model_fields_set}
        cfg: HifiGanConfig | None = None
        if options.config:
            cfg = load_config(resolve_path(options.config))
        elif not (options.checkpoint and options.checkpoint.endswith(".safetensors")):
            cfg = config_from_dict(options.model_dump(include=set(_ARCH_FIELDS)), "unit-hifigan options")
        generator = load_any(resolve_path(options.checkpoint), cfg) if options.checkpoint else CodeHiFiGAN(cfg)
        got = generator.cfg.model_dump()
        clashes = [(f, f"set to {_dump(v)} but the loaded config has {got[f]!r}")
                   for f, v in explicit.items() if _dump(v) != got[f]]
        if clashes and (options.config or options.checkpoint):
            raise ConfigError(clashes, options.config or options.checkpoint)
        if options.dur_prediction and generator.dur_predictor is None:
            raise ConfigError([("dur_prediction", "this vocoder has no duration predictor (no dur_predictor_params)")])
        return cls(generator.remove_weight_norm().eval(), options)

    def saved_options(self) -> "UnitHifiGanVocoder.Options":
        """Architecture-only options (no file paths): they rebuild this vocoder for saved weights."""
        arch = {f: getattr(self.generator.cfg, f) for f in _ARCH_FIELDS}
        keep = self.options.model_dump(include={"dur_prediction", "speaker", "stream_context_units",
                                                "stream_chunk_units"})
        return self.Options.model_validate({**_plain(arch), **keep})

    @property
    def hop_length(self) -> int:
        """Samples per unit frame (320 for the Lyra vocoder)."""
        return self.generator.hop_length

    def _spkr(self, speaker: int | Tensor | None, batch: int) -> Tensor | None:
        if not self.generator.cfg.has_speaker:
            return None
        speaker = self.options.speaker if speaker is None else speaker
        if speaker is None:
            raise InvalidUnitsError(f"this multi-speaker vocoder needs a speaker id in "
                                    f"0..{self.generator.cfg.num_speakers - 1}: set option `speaker`")
        s = torch.as_tensor(speaker, device=self.generator.dict.weight.device)
        return s.expand(batch) if s.dim() == 0 else s

    def vocode(self, units: Tensor, lengths: Tensor | None = None, dur_prediction: bool | None = None,
               speaker: int | Tensor | None = None, f0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, T) units, optional (B,) lengths -> waveform (B, S), zero past each row's (B,) sample length."""
        dur = self.options.dur_prediction if dur_prediction is None else dur_prediction
        dev = self.generator.dict.weight.device
        units = units.to(dev)
        lengths = None if lengths is None else torch.as_tensor(lengths, device=dev)
        with torch.no_grad():
            return self.generator(units, lengths, dur_prediction=dur, spkr=self._spkr(speaker, units.shape[0]),
                                  f0=None if f0 is None else f0.to(dev))

    def forward(self, units: Tensor, **kwargs: Any) -> Tensor:
        """(B, T) long units -> (B, S) waveform. Keyword arguments as :meth:`vocode` (lengths, speaker, ...)."""
        return self.vocode(units, **kwargs)[0]

    def synthesize(self, units: Sequence[int], dur_prediction: bool | None = None,
                   speaker: int | None = None) -> Tensor:
        """One unit sequence -> (S,) waveform; ``dur_prediction`` defaults to the option of the same name."""
        wav, _ = self.vocode(_as_unit_tensor(units)[None], dur_prediction=dur_prediction, speaker=speaker)
        return wav[0]

    def stream(self, units: Iterator[Sequence[int]], dur_prediction: bool | None = None,
               speaker: int | None = None) -> Iterator[Tensor]:
        """Vocode units as they arrive; the concatenated (S_i,) chunks equal :meth:`synthesize` (see streaming.py)."""
        ctx = self.options.stream_context_units
        dur = self.options.dur_prediction if dur_prediction is None else dur_prediction
        streamer = StreamingVocoder(self.generator, dur_prediction=dur,
                                    chunk=self.options.stream_chunk_units, context=ctx,
                                    spkr=self._spkr(speaker, 1))
        return streamer.stream(units)

    def receptive_field(self) -> tuple[int, int]:
        """(left, right) frames of context that make streaming exact."""
        return receptive_field_frames(self.generator.cfg)


def _dump(v: Any) -> Any:
    return v.model_dump() if hasattr(v, "model_dump") else v


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _dump(v) for k, v in d.items()}


@hookimpl
def register_vocoders(register: Register) -> None:
    """Register the ``unit-hifigan`` vocoder."""
    register("unit-hifigan", UnitHifiGanVocoder)
