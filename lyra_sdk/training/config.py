"""The training configuration: which model, which data, what trains, how long, and where the run goes."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from ..config import _msg, apply_override
from ..errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelSection(_Strict):
    """The model to train: a model config (built fresh) or a saved model folder, plus dotted overrides
    (e.g. ``projectors.speech.trainable=full``) that set what trains."""

    config: str | None = None
    init_from: str | None = Field(None, description="saved model folder to start from (weights included)")
    overrides: list[str] = Field(default_factory=list)


class DataSection(_Strict):
    """LLaVA / Lyra JSON datasets (a list of records); media paths are relative to ``media_root`` or the file."""

    train: str | Annotated[list[str], Field(min_length=1)] = Field(
        description="a dataset file, or several whose records are pooled")
    eval: str | None = None
    media_root: str | None = None
    max_length: int | None = Field(None, gt=0, description="records longer than this (estimated tokens) are refused")
    group_by_length: bool = True
    encoder_cache_mb: int = Field(0, ge=0, description="memory for frozen encoders' outputs per media file "
                                  "(encode each clip once per run, not once per epoch); 0 = off")
    encoder_cache_dir: str | None = Field(None, description="also keep frozen encoders' outputs in this folder "
                                          "(keyed by file and encoder weights), so later runs skip the encoder")


class OptimSection(_Strict):
    """AdamW with linear warmup and cosine decay."""

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    max_steps: int = Field(100, gt=0, description="optimizer steps")
    batch_size: int = Field(4, gt=0, description="samples per device per micro-batch")
    grad_accum: int = Field(1, gt=0)
    clip_grad_norm: float | None = Field(1.0, gt=0)
    lr_multipliers: dict[str, float] = Field(
        default_factory=dict,
        description="learning-rate factor per parameter-name prefix, e.g. {'encoders.speech': 0.1} to fine-tune an "
                    "encoder gently beside a projector; 0 freezes those parameters (their saved layout is kept); "
                    "the longest matching prefix wins, others get 1")

    @field_validator("lr_multipliers")
    @classmethod
    def _non_negative_multipliers(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in value.items() if not v >= 0 or not k.strip()]
        if bad:
            raise ValueError(f"each lr multiplier needs a non-empty prefix and a value >= 0 (not: {', '.join(bad)})")
        return value


class LossSection(_Strict):
    """Loss terms: total = CE + lcmr_weight * LCMR + ctc_weight * CTC + asr_ctc_weight * ASR-CTC (a weight of 0
    turns a term off)."""

    ce_weight: float = Field(1.0, ge=0)
    lcmr_weight: float = Field(0.0, ge=0)
    lcmr_temperature: float = Field(0.06, gt=0)
    lcmr_gamma: float = Field(0.1, gt=0)
    lcmr_normalize: Literal["L", "L+S"] = "L"
    lcmr_softmax: Literal["transcript", "vocabulary"] = Field(
        "transcript", description="LCMR cost's softmax over the transcript's tokens (Lyra) or the LLM's vocabulary")
    ctc_weight: float = Field(0.0, ge=0, description="CTC of the speech decoder's units (speech generation)")
    asr_ctc_weight: float = Field(
        0.0, ge=0, description="CTC from the speech tokens' scores over the LLM's vocabulary (+ a blank) to the "
        "transcript (lyra_sdk.mechanisms.vocab_ctc; needs no LLM forward)")
    asr_ctc_temperature: float = Field(0.06, gt=0, description="tau dividing speech-token . embedding products")
    asr_ctc_blank: float | None = Field(None, description="the blank's constant score in ASR-CTC (None = ln V + 4)")
    asr_ctc_candidates: Literal["transcripts", "batch", "vocabulary"] = Field(
        "transcripts", description="ASR-CTC's softmax over the word pieces of all training transcripts, of the "
        "step's own transcripts only (both sampled softmaxes, fast on a CPU; 'batch' suits a training set that "
        "covers most of the vocabulary), or over the whole vocabulary")
    asr_ctc_negatives: int = Field(
        4096, ge=0, description="with candidates=transcripts or batch: this many random other word pieces join each "
        "step's candidates, so the rest of the vocabulary is pushed away too (evaluation draws a fixed set)")


class RunSection(_Strict):
    """Where and how the run goes."""

    output_dir: str = "runs/lyra"
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    gradient_checkpointing: bool = False
    lora_route: str | None = Field(None, description="LoRA route trained (its adapter and projector copies)")
    log_every: int = Field(1, gt=0)
    eval_every: int = Field(0, ge=0, description="optimizer steps between evaluations (0 = only at the end)")
    save_every: int = Field(0, ge=0, description="optimizer steps between checkpoints (0 = only at the end)")
    keep_last: int = Field(2, gt=0)
    device: str = "auto"
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"


class TrainConfig(_Strict):
    """A whole training run (one of Lyra's stages, or your own)."""

    stage: str = "custom"
    model: ModelSection
    data: DataSection
    optim: OptimSection = Field(default_factory=OptimSection)
    loss: LossSection = Field(default_factory=LossSection)
    run: RunSection = Field(default_factory=RunSection)

    _base_dir: Path | None = PrivateAttr(default=None)

    @property
    def base_dir(self) -> Path:
        """Folder that relative paths resolve against (the config file's)."""
        return self._base_dir or Path.cwd()

    def path(self, value: str | None) -> Path | None:
        """Resolve a path option against :attr:`base_dir`."""
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @classmethod
    def load(cls, path: str | os.PathLike, overrides: Iterable[str] = ()) -> "TrainConfig":
        """Read YAML/JSON, apply dotted overrides, validate; every error at once."""
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError([("", f"training config not found: {p}")], str(p))
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError([("", f"cannot parse {p.name}: {exc}")], str(p)) from None
        if not isinstance(data, dict):
            raise ConfigError([("", "the top level must be a mapping")], str(p))
        return cls.from_dict(data, overrides, source=str(p), base_dir=p.parent.resolve())

    @classmethod
    def from_dict(cls, data: dict[str, Any], overrides: Iterable[str] = (), source: str | None = None,
                  base_dir: Path | None = None) -> "TrainConfig":
        """Validate plain data."""
        import copy

        data = copy.deepcopy(data)
        errors: list[tuple[str, str]] = []
        for ov in overrides:
            try:
                apply_override(data, ov)
            except ConfigError as exc:
                errors += exc.errors
        try:
            cfg = cls.model_validate(data)
        except ValidationError as exc:
            errors += [(".".join(str(x) for x in e["loc"]), _msg(e)) for e in exc.errors()]
            cfg = None
        if cfg is not None and cfg.model.config is None and cfg.model.init_from is None:
            errors.append(("model", "set model.config (a model config file) or model.init_from (a saved model)"))
        if errors or cfg is None:
            raise ConfigError(errors, source)
        cfg._base_dir = base_dir
        return cfg
