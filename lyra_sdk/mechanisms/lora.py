"""Multi-modality LoRA (MLoRA): named LoRA adapters on the LLM decoder, each with its own projector copies.

One :class:`AdapterSet` injects every configured adapter into a transformers causal LM *in place* with peft
(no ``PeftModel`` wrapper, so module paths stay the same apart from peft's ``base_layer`` / ``lora_A`` /
``lora_B`` sub-modules) and keeps, per route, a copy of the projectors that route retrains. A route is an
adapter name; ``None`` means adapters off, i.e. exactly the base model. Saved adapters are standard PEFT folders.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field, field_validator
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError, LyraError
from ..interfaces import LLMBackbone, Modality

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PROJECTOR_WEIGHTS = "non_lora_trainables.safetensors"
LEGACY_ADAPTER_WEIGHTS = "adapter_model.bin"
LEGACY_PROJECTOR_WEIGHTS = "non_lora_trainables.bin"
PEFT_PREFIX = "base_model.model."
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

_NAME_RE = re.compile(r"^[a-z0-9_]+$")
_LEGACY_PROJECTOR_RE = re.compile(r"(?:^|\.)mm_(?:([a-z]+)_)?projector\.(.+)$")


class LoraAdapterOptions(BaseModel, extra="forbid"):
    """One adapter: LoRA shape on the decoder projections and the modalities whose projector it retrains."""

    r: int = Field(64, gt=0, description="LoRA rank")
    alpha: float = Field(16, gt=0, description="LoRA alpha (scaling = alpha / r)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="dropout on the LoRA input while training")
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS), min_length=1,
                                      description="decoder Linear module names that get LoRA")
    projectors: list[Modality] = Field(default_factory=lambda: [Modality.SPEECH],
                                       description="modalities whose projector this route carries its own copy of")


class LoraOptions(BaseModel, extra="forbid"):
    """The ``lora`` section of a model config: the adapters by route name and the router that picks one."""

    adapters: dict[str, LoraAdapterOptions] = Field(default_factory=dict, description="route name -> adapter")
    router: str = Field("default", description="registered lora_router plugin name")
    router_options: dict[str, Any] = Field(default_factory=dict, description="validated by the router's Options")

    @field_validator("adapters")
    @classmethod
    def _names(cls, adapters: dict[str, LoraAdapterOptions]) -> dict[str, LoraAdapterOptions]:
        bad = [n for n in adapters if not _NAME_RE.match(n)]
        if bad:
            raise ValueError(f"adapter names must be lowercase letters, digits and '_' ([a-z0-9_]+), got {bad}")
        # peft keys its LoRA sub-modules by adapter name in nn.ModuleDicts, which refuse their own attribute names.
        probe = nn.ModuleDict()
        reserved = [n for n in adapters if hasattr(probe, n)]
        if reserved:
            raise ValueError(f"adapter names {reserved} are reserved (used by torch/peft): choose other names")
        return adapters


SPEECH = LoraAdapterOptions(r=64, alpha=16)
"""Lyra's ``speech`` adapter (one clip of at most 30 s)."""
LONG_SPEECH = LoraAdapterOptions(r=128, alpha=256)
"""Lyra's ``long_speech`` adapter (several 30 s windows)."""


def route_for_batch(routes: list[str | None]) -> str | None:
    """The one route shared by every sample of a batch; a batch mixing routes is refused.

    LoRA routes switch weights for the whole forward, so a batch must be split by route first.
    """
    distinct = list(dict.fromkeys(routes))
    if len(distinct) > 1:
        names = [str(r) for r in distinct]
        listed = ", ".join(names[:-1]) + " and " + names[-1]
        raise LyraError(f"batch mixes LoRA routes {listed}: split it by route")
    return distinct[0] if distinct else None


def peft_config(options: LoraAdapterOptions, base_model_name_or_path: str | None = None) -> Any:
    """The ``peft.LoraConfig`` of one adapter (task ``CAUSAL_LM``, no bias)."""
    from peft import LoraConfig

    alpha = int(options.alpha) if float(options.alpha).is_integer() else options.alpha
    return LoraConfig(r=options.r, lora_alpha=alpha, lora_dropout=options.dropout, bias="none",
                      target_modules=list(options.target_modules), task_type="CAUSAL_LM",
                      base_model_name_or_path=base_model_name_or_path)


class AdapterSet(nn.Module):
    """Named LoRA adapters living inside a causal LM, plus per-route projector copies.

    Build with :meth:`attach`. The LM and the base projectors are referenced, not registered: they belong to
    the model that owns them; this module's own parameters are only the projector copies
    (``projectors[route][modality]``). The LoRA weights are registered in the LM.
    """

    def __init__(self, lm: nn.Module, base_projectors: Mapping[Modality, nn.Module], options: LoraOptions) -> None:
        super().__init__()
        from peft.tuners.lora import LoraLayer

        object.__setattr__(self, "_lm", lm)  # not a sub-module: owned by the caller's model
        self._base = {Modality(m): p for m, p in base_projectors.items()}
        self.options = options
        self._layers = [(n, m) for n, m in lm.named_modules() if isinstance(m, LoraLayer)]
        self.projectors = nn.ModuleDict()
        for route, ad in options.adapters.items():
            copies = nn.ModuleDict({m.value: copy.deepcopy(self._base[m]) for m in ad.projectors})
            copies.requires_grad_(False)
            self.projectors[route] = copies
        self._active: str | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def attach(cls, lm: nn.Module, base_projectors: Mapping[Modality, nn.Module], options: LoraOptions) -> "AdapterSet":
        """Inject every adapter of ``options`` into ``lm`` (the transformers ``*ForCausalLM``) and copy projectors.

        An :class:`~lyra_sdk.interfaces.LLMBackbone` is unwrapped to its ``.model``. The ``requires_grad`` flags
        of the existing weights are kept; new LoRA weights and projector copies start frozen (see
        :meth:`mark_trainable`); adapters start off. New LoRA ``B`` matrices are zero, so any route starts equal
        to the base model until trained or loaded.
        """
        from peft import inject_adapter_in_model
        from peft.tuners.tuners_utils import BaseTunerLayer

        if isinstance(lm, LLMBackbone):
            lm = getattr(lm, "model", None)
            if not isinstance(lm, nn.Module):
                raise LyraError("AdapterSet.attach needs the transformers model: pass llm.model")
        base = {Modality(m): p for m, p in base_projectors.items()}
        errors = [(f"lora.adapters.{name}.projectors", f"the model has no {m.value} projector "
                   f"(projectors: {', '.join(sorted(x.value for x in base)) or 'none'})")
                  for name, ad in options.adapters.items() for m in ad.projectors if m not in base]
        if errors:
            raise ConfigError(errors)
        if any(isinstance(m, BaseTunerLayer) for m in lm.modules()):
            raise LyraError("this model already carries peft adapter layers: attach adapters once")
        flags = [(p, p.requires_grad) for p in lm.parameters()]
        for name, ad in options.adapters.items():
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                try:
                    inject_adapter_in_model(peft_config(ad), lm, adapter_name=name)
                except ValueError as exc:  # peft: target modules not found, unsupported layer types
                    raise ConfigError([(f"lora.adapters.{name}.target_modules", str(exc))]) from None
        lm.requires_grad_(False)
        for p, flag in flags:
            p.requires_grad_(flag)
        adapters = cls(lm, base, options)
        for _, layer in adapters._layers:  # peft's new dropout modules start in training mode
            layer.train(layer.get_base_layer().training)
        adapters.activate(None)
        return adapters

    # ------------------------------------------------------------------ routes

    @property
    def routes(self) -> list[str]:
        """The configured route (adapter) names."""
        return list(self.options.adapters)

    @property
    def active(self) -> str | None:
        """The active route, or None when adapters are off."""
        return self._active

    def _check(self, route: str | None, allow_none: bool = True) -> None:
        if route is None and allow_none:
            return
        if route not in self.options.adapters:
            valid = ", ".join(self.routes) or "(no adapters configured)"
            raise LyraError(f"unknown LoRA route {route!r}; configured routes: {valid}")

    def activate(self, route: str | None) -> None:
        """Make ``route`` the only active adapter; ``None`` disables all adapters (the exact base model).

        ``requires_grad`` flags are left as they are (peft's own switching would change them).
        """
        self._check(route)
        flags = [(p, p.requires_grad) for _, layer in self._layers for p in layer.parameters()]
        for _, layer in self._layers:
            if route is not None and route in layer.lora_A:
                layer.set_adapter(route)
                layer.enable_adapters(True)
            else:  # adapters off, or this route does not target this module
                layer.enable_adapters(False)
        for p, flag in flags:
            p.requires_grad_(flag)
        self._active = route

    @contextlib.contextmanager
    def using(self, route: str | None) -> Iterator["AdapterSet"]:
        """Activate ``route`` for the ``with`` block, then restore the previous route."""
        previous = self._active
        self.activate(route)
        try:
            yield self
        finally:
            self.activate(previous)

    def projector(self, modality: Modality | str, route: str | None) -> nn.Module:
        """The projector serving ``modality`` on ``route``: the route's own copy, or the base projector."""
        modality = Modality(modality)
        self._check(route)
        if route is not None and modality.value in self.projectors[route]:
            return self.projectors[route][modality.value]
        if modality not in self._base:
            raise LyraError(f"no {modality.value} projector; projectors: {', '.join(m.value for m in self._base)}")
        return self._base[modality]

    # ------------------------------------------------------------------ training

    def _lora_entries(self, route: str) -> Iterator[tuple[str, str, nn.Parameter]]:
        """(LM parameter path, PEFT key, parameter) for each LoRA weight of ``route``."""
        for name, layer in self._layers:
            for attr in layer.adapter_layer_names:
                holder = getattr(layer, attr)
                if route not in holder:
                    continue
                sub = holder[route]
                is_param = isinstance(sub, nn.Parameter)
                params = [("", sub)] if is_param else [("." + k, p) for k, p in sub.named_parameters()]
                for suffix, p in params:
                    yield f"{name}.{attr}.{route}{suffix}", f"{PEFT_PREFIX}{name}.{attr}{suffix}", p

    def _lora_params(self, route: str) -> dict[str, nn.Parameter]:
        """LM parameter path -> parameter, for one adapter's LoRA weights."""
        return {path: p for path, _, p in self._lora_entries(route)}

    def trainable_parameters(self, route: str) -> dict[str, nn.Parameter]:
        """Name -> parameter for ``route``: its LoRA weights (``llm.<path>``) and projector copies
        (``projectors.<route>.<modality>.<param>``)."""
        self._check(route, allow_none=False)
        out = {f"llm.{k}": p for k, p in self._lora_params(route).items()}
        out.update({f"projectors.{route}.{k}": p for k, p in self.projectors[route].named_parameters()})
        return out

    def mark_trainable(self, route: str) -> None:
        """``requires_grad`` True only for ``route``'s LoRA weights and projector copies; False for everything
        else in the LM, the base projectors and the other routes."""
        self._check(route, allow_none=False)
        self._lm.requires_grad_(False)
        self.projectors.requires_grad_(False)
        for proj in self._base.values():
            proj.requires_grad_(False)
        for p in self.trainable_parameters(route).values():
            p.requires_grad_(True)

    # ------------------------------------------------------------------ save / load

    def _peft_state(self, route: str) -> dict[str, nn.Parameter]:
        """PEFT key (``base_model.model.<path>.lora_A.weight``) -> parameter."""
        return {key: p for _, key, p in self._lora_entries(route)}

    def save_peft(self, route: str, directory: str | Path, base_model_name_or_path: str | None = None) -> Path:
        """Write ``route`` as a standard PEFT folder (``adapter_config.json``, ``adapter_model.safetensors``)
        plus ``non_lora_trainables.safetensors`` (projector copies, keys ``<modality>.<param>``)."""
        from safetensors.torch import save_file

        self._check(route, allow_none=False)
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        peft_config(self.options.adapters[route], base_model_name_or_path).save_pretrained(str(out))
        state = {k: p.detach().cpu().contiguous() for k, p in self._peft_state(route).items()}
        save_file(state, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        proj = {f"{m}.{k}": t.detach().cpu().contiguous()
                for m, mod in self.projectors[route].items() for k, t in mod.state_dict().items()}
        save_file(proj, str(out / PROJECTOR_WEIGHTS), metadata={"format": "pt"})
        return out

    def load_peft(self, route: str, directory: str | Path, rename: Callable[[str], str] | None = None) -> None:
        """Load a PEFT folder into ``route`` (and its projector copies), strictly.

        Rank and alpha must match the configured adapter, and the weight keys and shapes must match exactly;
        otherwise :class:`~lyra_sdk.errors.CheckpointError` and nothing is changed. Accepts
        ``adapter_model.safetensors`` or ``.bin``, and projector weights as ``non_lora_trainables.safetensors``
        or Lyra's original ``non_lora_trainables.bin`` (keys ``model.model.mm_speech_projector.linear1.weight``).
        ``rename`` maps a saved module path (without ``base_model.model.``) onto this LM's, for checkpoints
        trained on a model whose decoder sits elsewhere.
        """
        self._check(route, allow_none=False)
        folder = Path(directory).expanduser()
        if not folder.is_dir():
            raise CheckpointError(f"adapter folder not found: {folder}")
        self._check_config(route, folder)
        weights = _read_tensors(folder, ADAPTER_WEIGHTS, LEGACY_ADAPTER_WEIGHTS, required=True)
        if rename is not None:
            weights = {PEFT_PREFIX + rename(k.removeprefix(PEFT_PREFIX)): v for k, v in weights.items()}
        plan = _match(self._peft_state(route), weights, folder / ADAPTER_WEIGHTS)
        expected = {f"{m}.{k}": t for m, mod in self.projectors[route].items() for k, t in mod.state_dict().items()}
        proj = _read_tensors(folder, PROJECTOR_WEIGHTS, LEGACY_PROJECTOR_WEIGHTS, required=bool(expected))
        if proj and not (folder / PROJECTOR_WEIGHTS).exists():
            proj = _legacy_projector_keys(proj, folder / LEGACY_PROJECTOR_WEIGHTS)
        plan += _match(expected, proj, folder / PROJECTOR_WEIGHTS)
        with torch.no_grad():
            for target, value in plan:
                target.copy_(value)

    def _check_config(self, route: str, folder: Path) -> None:
        cfg_file = folder / ADAPTER_CONFIG
        if not cfg_file.exists():
            raise CheckpointError(f"{folder} is not a PEFT adapter folder: {ADAPTER_CONFIG} is missing")
        try:
            data = json.loads(cfg_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{cfg_file} is not valid JSON: {exc}") from None
        ad = self.options.adapters[route]
        if data.get("peft_type", "LORA") != "LORA":
            raise CheckpointError(f"{cfg_file}: expected a LORA adapter, got peft_type {data.get('peft_type')!r}")
        for flag in ("use_dora", "use_rslora", "rank_pattern", "alpha_pattern"):
            if data.get(flag):
                raise CheckpointError(f"{cfg_file}: {flag} is not supported (one rank and alpha per adapter)")
        if data.get("r") != ad.r:
            raise CheckpointError(f"{cfg_file}: adapter rank r={data.get('r')}, but lora.adapters.{route}.r is {ad.r}")
        if data.get("lora_alpha") is None or float(data["lora_alpha"]) != ad.alpha:
            raise CheckpointError(f"{cfg_file}: lora_alpha={data.get('lora_alpha')}, "
                                  f"but lora.adapters.{route}.alpha is {ad.alpha}")

    # ------------------------------------------------------------------ export

    def merged_copy(self, lm: nn.Module, route: str) -> nn.Module:
        """A new plain transformers model: a deep copy of ``lm`` with ``route`` merged into the weights and every
        peft layer removed (``lm`` itself is untouched; needs memory for a second copy of the LM)."""
        from peft.tuners.lora import LoraLayer

        self._check(route, allow_none=False)
        if isinstance(lm, LLMBackbone):
            lm = lm.model
        model = copy.deepcopy(lm)
        layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]
        if not any(route in m.lora_A for _, m in layers):
            raise LyraError(f"the given model carries no LoRA layers of route {route!r}")
        with torch.no_grad():
            for name, layer in layers:
                if route in layer.lora_A:
                    layer.merge(adapter_names=[route])
                parent_name, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent_name), child, layer.get_base_layer())
        if "peft_config" in model.__dict__:
            del model.__dict__["peft_config"]
        return model


def _read_tensors(folder: Path, name: str, legacy: str, required: bool) -> dict[str, Tensor]:
    """Tensors from ``folder/name`` (safetensors) or ``folder/legacy`` (a torch pickle of tensors, read with
    ``weights_only``); {} when neither exists and not ``required``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path, old = folder / name, folder / legacy
    try:
        if path.exists():
            return load_file(str(path))
        if old.exists():
            data = torch.load(str(old), map_location="cpu", weights_only=True)
            if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
                raise CheckpointError(f"{old} is not a plain dict of tensors")
            return data
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"cannot read weights in {folder}: {exc}") from None
    if required:
        raise CheckpointError(f"{folder}: neither {name} nor {legacy} found")
    return {}


def _legacy_projector_keys(state: Mapping[str, Tensor], source: Path) -> dict[str, Tensor]:
    """Lyra's ``...mm_speech_projector.linear1.weight`` -> ``speech.linear1.weight`` (``mm_projector`` = image)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        m = _LEGACY_PROJECTOR_RE.search(key)
        if m is None:
            raise CheckpointError(f"{source}: unexpected key {key!r} (expected ...mm_<modality>_projector.<param>)")
        out[f"{m.group(1) or Modality.IMAGE.value}.{m.group(2)}"] = value
    return out


def _match(expected: Mapping[str, Tensor], got: Mapping[str, Tensor], source: Path) -> list[tuple[Tensor, Tensor]]:
    """(target, value) pairs when keys and shapes match exactly, else a CheckpointError naming the differences."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source} does not match the configured adapter: missing {missing[:4]} "
                              f"({len(missing)} in all), unexpected {unexpected[:4]} ({len(unexpected)} in all)")
    bad = [f"{k}: saved {tuple(got[k].shape)}, expected {tuple(t.shape)}"
           for k, t in expected.items() if got[k].shape != t.shape]
    if bad:
        raise CheckpointError(f"{source}: shape mismatch: {'; '.join(bad[:4])}")
    return [(expected[k], got[k]) for k in expected]


__all__ = ["AdapterSet", "LONG_SPEECH", "LoraAdapterOptions", "LoraOptions", "SPEECH", "peft_config",
           "route_for_batch"]
