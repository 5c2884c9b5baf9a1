"""The model configuration: a strict pydantic tree whose components each name a plugin and its options.

``LyraConfig.load(path, overrides)`` reads YAML or JSON, applies dotted overrides
(``llm.options.config.num_hidden_layers=2``), validates the structure and then every component's options with
that plugin's own ``Options`` model, and reports every problem at once as a :class:`~lyra_sdk.ConfigError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from .errors import ConfigError
from .interfaces import ComponentKind, Modality
from .mechanisms.ctc_compression import SpeechCompressionOptions
from .mechanisms.lora import LoraOptions

Trainability = Literal["frozen", "lora", "full", "top"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ComponentSpec(_Strict):
    """One component: which plugin builds it, that plugin's options, and whether it trains."""

    plugin: str = Field(description="registered plugin name, see `lyra plugins list`")
    options: dict[str, Any] = Field(default_factory=dict, description="validated by the plugin's Options model")
    trainable: Trainability = Field("frozen", description="frozen, lora (adapters only), full, or top (an "
                                    "encoder's last `top_layers` blocks; the frozen rest can be cached in training)")
    top_layers: int | None = Field(None, gt=0, description="with trainable: top, how many of the encoder's last "
                                   "blocks (and its final norm) train")
    source: dict[str, Any] | None = Field(None, description="written by save_pretrained: the options that loaded this "
                                          "component's pretrained weights, so a later `reference_sources` save can "
                                          "point at them again")


    @model_validator(mode="after")
    def _top_layers(self) -> "ComponentSpec":
        if self.trainable == "top" and self.top_layers is None:
            raise ValueError("trainable: top needs top_layers (how many of the last blocks train)")
        if self.trainable != "top" and self.top_layers is not None:
            raise ValueError(f"top_layers is only read with trainable: top (this component is {self.trainable})")
        return self


class GenerationOptions(_Strict):
    """Text generation settings. ``temperature`` 0 means greedy decoding."""

    max_new_tokens: int = Field(128, gt=0)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop_ids: list[int] = Field(default_factory=list, description="extra stop token ids (the tokenizer's eos ids always stop)")


class LyraConfig(_Strict):
    """The whole model: an LLM, encoders and projectors per modality, optional speech output."""

    name: str = "lyra"
    description: str = ""
    init_seed: int = Field(0, description="seed for randomly initialised weights, so a config always builds the same model")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    system_prompt: str | None = "You are a helpful assistant."
    llm: ComponentSpec
    encoders: dict[Modality, ComponentSpec] = Field(default_factory=dict)
    projectors: dict[Modality, ComponentSpec] = Field(default_factory=dict)
    speech_decoder: ComponentSpec | None = None
    vocoder: ComponentSpec | None = None
    lora: LoraOptions | None = Field(None, description="MLoRA: named LoRA adapters on the LLM and the router")
    extraction: ComponentSpec | None = Field(None, description="LMME: a latent extractor plugin (e.g. topk) and its options")
    speech_compression: SpeechCompressionOptions | None = Field(
        None, description="CTC compression of speech tokens before the LLM (needs an ASR-CTC-trained projector)")
    generation: GenerationOptions = Field(default_factory=GenerationOptions)

    _base_dir: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _pairs(self) -> "LyraConfig":
        errors = []
        for m in self.encoders:
            if m not in self.projectors:
                errors.append(f"encoder for {m.value!r} has no projector: add projectors.{m.value}")
        for m in self.projectors:
            if m not in self.encoders:
                errors.append(f"projector for {m.value!r} has no encoder: add encoders.{m.value}")
        for path, kind, spec in self.components():
            if spec.trainable == "top" and kind is not ComponentKind.ENCODER:
                errors.append(f"{path}: trainable: top is for encoders (their last blocks); use full or lora")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    @property
    def base_dir(self) -> Path | None:
        """Folder that relative paths in options are resolved against (the config file's folder)."""
        return self._base_dir

    def components(self) -> Iterable[tuple[str, ComponentKind, ComponentSpec]]:
        """Every component as (dotted path, kind, spec)."""
        yield "llm", ComponentKind.LLM, self.llm
        for m, spec in self.encoders.items():
            yield f"encoders.{m.value}", ComponentKind.ENCODER, spec
        for m, spec in self.projectors.items():
            yield f"projectors.{m.value}", ComponentKind.PROJECTOR, spec
        if self.speech_decoder is not None:
            yield "speech_decoder", ComponentKind.SPEECH_DECODER, self.speech_decoder
        if self.vocoder is not None:
            yield "vocoder", ComponentKind.VOCODER, self.vocoder
        if self.extraction is not None:
            yield "extraction", ComponentKind.EXTRACTOR, self.extraction

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], overrides: Iterable[str] = (), *, host: Any = None,
                  source: str | None = None, base_dir: str | os.PathLike | None = None) -> "LyraConfig":
        """Validate plain data (+ dotted overrides): structure first, then each plugin's options; all errors at once."""
        data = json.loads(json.dumps(dict(data), default=str))  # deep copy, plain types
        errors: list[tuple[str, str]] = []
        for ov in overrides:
            try:
                apply_override(data, ov)
            except ConfigError as exc:
                errors += exc.errors
        cfg = None
        try:
            cfg = cls.model_validate(data)
        except ValidationError as exc:
            errors += [(".".join(str(p) for p in e["loc"]), _msg(e)) for e in exc.errors()]
        errors += _validate_plugin_options(data, host)
        if errors:
            raise ConfigError(errors, source)
        if cfg is None:  # unreachable: a failed validation always adds errors
            raise ConfigError([("", "invalid configuration")], source)
        resolved = _resolved_options(cfg, host)
        for path, _, spec in cfg.components():
            spec.options = resolved[path]
        if base_dir is not None:
            cfg._base_dir = Path(base_dir)
        return cfg

    @classmethod
    def load(cls, path: str | os.PathLike, overrides: Iterable[str] = (), *, host: Any = None) -> "LyraConfig":
        """Read a YAML or JSON file; relative paths inside it resolve against its folder."""
        p = Path(path).expanduser()
        if not p.exists():
            raise ConfigError([("", f"config file not found: {p}")], str(p))
        if p.is_dir():
            raise ConfigError([("", f"expected a config file, got a folder: {p}")], str(p))
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError([("", f"cannot parse {p.name} as YAML/JSON: {exc}")], str(p)) from None
        if not isinstance(data, dict):
            raise ConfigError([("", f"the top level must be a mapping, got {type(data).__name__}")], str(p))
        return cls.from_dict(data, overrides, host=host, source=str(p), base_dir=p.parent.resolve())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (modalities as strings)."""
        return self.model_dump(mode="json")

    def save(self, path: str | os.PathLike) -> None:
        """Write as JSON (``.json``) or YAML (anything else)."""
        p = Path(path)
        text = json.dumps(self.to_dict(), indent=2) if p.suffix == ".json" else yaml.safe_dump(self.to_dict(), sort_keys=False)
        p.write_text(text, encoding="utf-8")


def _msg(e: Mapping[str, Any]) -> str:
    if e.get("type") == "extra_forbidden":
        return "unknown key (not allowed here)"
    if e.get("type") == "missing":
        return "required key is missing"
    return str(e.get("msg", "invalid"))


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply ``a.b.c=value`` to nested dicts in place; the value is parsed as YAML (``2``, ``true``, ``[1, 2]``)."""
    if "=" not in override:
        raise ConfigError([("overrides", f"override {override!r} must look like key.path=value")])
    key, raw = override.split("=", 1)
    parts = [k for k in key.strip().split(".")]
    if not all(parts):
        raise ConfigError([("overrides", f"override {override!r} has an empty key segment")])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node: Any = data
    for i, k in enumerate(parts[:-1]):
        nxt = node.get(k) if isinstance(node, dict) else None
        if nxt is None:
            nxt = {}
            node[k] = nxt
        if not isinstance(nxt, dict):
            raise ConfigError([("overrides", f"cannot set {key}: {'.'.join(parts[: i + 1])} is not a mapping")])
        node = nxt
    node[parts[-1]] = value


def _raw_components(data: Mapping[str, Any]) -> list[tuple[str, ComponentKind, Any]]:
    out: list[tuple[str, ComponentKind, Any]] = [("llm", ComponentKind.LLM, data.get("llm"))]
    for field, kind in (("encoders", ComponentKind.ENCODER), ("projectors", ComponentKind.PROJECTOR)):
        group = data.get(field)
        if isinstance(group, dict):
            out += [(f"{field}.{m}", kind, spec) for m, spec in group.items()]
    out.append(("speech_decoder", ComponentKind.SPEECH_DECODER, data.get("speech_decoder")))
    out.append(("vocoder", ComponentKind.VOCODER, data.get("vocoder")))
    out.append(("extraction", ComponentKind.EXTRACTOR, data.get("extraction")))
    lora = data.get("lora")
    if isinstance(lora, dict):
        router = {"plugin": lora.get("router", "default"), "options": lora.get("router_options", {})}
        out.append(("lora.router", ComponentKind.LORA_ROUTER, router))
    return out


def _host(host: Any) -> Any:
    if host is not None:
        return host
    from .plugins import default_host

    return default_host()


def _validate_plugin_options(data: Mapping[str, Any], host: Any) -> list[tuple[str, str]]:
    from .errors import PluginError

    errors: list[tuple[str, str]] = []
    for path, kind, spec in _raw_components(data):
        if not isinstance(spec, dict) or not isinstance(spec.get("plugin"), str):
            continue
        try:
            entry = _host(host).get(kind, spec["plugin"])
        except PluginError as exc:
            errors.append((f"{path}.plugin", str(exc)))
            continue
        opts = spec.get("options", {})
        if not isinstance(opts, dict):
            continue  # the structural check reports it
        try:
            entry.cls.Options.model_validate(opts)
        except ValidationError as exc:
            errors += [(f"{path}.options." + ".".join(str(p) for p in e["loc"]), _msg(e)) for e in exc.errors()]
    return errors


def _resolved_options(cfg: LyraConfig, host: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for path, kind, spec in cfg.components():
        entry = _host(host).get(kind, spec.plugin)
        out[path] = entry.cls.Options.model_validate(spec.options).model_dump(mode="json")
    return out
