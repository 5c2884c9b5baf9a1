"""The plugin host: discovers plugins through entry points and fills one registry per component kind.

Built-in plugins ship in their own packages under ``plugins/`` and are found exactly like a third party's:
through the ``lyra_sdk`` entry-point group. ``LYRA_PLUGINS`` (a comma-separated list of entry-point or
distribution names) restricts which plugins load; the core's own entry points always load.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .interfaces import KIND_BASES, ComponentKind, Configurable

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "lyra_sdk"
ENV_RESTRICT = "LYRA_PLUGINS"
CORE_DISTRIBUTION = "lyra-sdk"
_HOOK_KIND = {
    "register_encoders": ComponentKind.ENCODER,
    "register_projectors": ComponentKind.PROJECTOR,
    "register_llms": ComponentKind.LLM,
    "register_lora_routers": ComponentKind.LORA_ROUTER,
    "register_extractors": ComponentKind.EXTRACTOR,
    "register_speech_decoders": ComponentKind.SPEECH_DECODER,
    "register_vocoders": ComponentKind.VOCODER,
}
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


@dataclass(frozen=True)
class ComponentEntry:
    """One registered component: its kind, name, class and the distribution that provides it."""

    kind: ComponentKind
    name: str
    cls: type
    package: str
    version: str

    def as_dict(self) -> dict[str, str]:
        """Plain data for ``lyra plugins list --json``."""
        return {"kind": self.kind.value, "name": self.name, "package": self.package, "version": self.version,
                "class": f"{self.cls.__module__}.{self.cls.__qualname__}"}


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class PluginHost:
    """A pluggy manager plus the registries it filled. Build one with :func:`get_plugin_host`."""

    def __init__(self, pm: pluggy.PluginManager, dists: dict[int, tuple[str, str]]) -> None:
        self.pm = pm
        self._dists = dists  # id(plugin object) -> (distribution, version)
        self.registries: dict[ComponentKind, dict[str, ComponentEntry]] = {k: {} for k in ComponentKind}
        for hook_name, kind in _HOOK_KIND.items():
            caller = getattr(pm.hook, hook_name)
            # Call each implementation on its own so every registration is attributed to its package.
            for impl in caller.get_hookimpls():
                package, version = dists.get(id(impl.plugin), (pm.get_name(impl.plugin) or "?", "?"))
                impl.function(register=self._registrar(kind, package, version))

    def _registrar(self, kind: ComponentKind, package: str, version: str):
        def register(name: str, component: type) -> None:
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise PluginError(f"{package}: invalid {kind.value} name {name!r}: use lowercase letters, digits, '-', '_', '.'")
            base = KIND_BASES[kind]
            if not (isinstance(component, type) and issubclass(component, base) and issubclass(component, Configurable)):
                raise PluginError(f"{package}: {kind.value} {name!r} must be a subclass of {base.__name__}, got {component!r}")
            existing = self.registries[kind].get(name)
            if existing is not None:
                raise PluginError(
                    f"duplicate {kind.value} name {name!r}: registered by both {existing.package} and {package}"
                )
            self.registries[kind][name] = ComponentEntry(kind, name, component, package, version)

        return register

    def get(self, kind: ComponentKind | str, name: str) -> ComponentEntry:
        """The entry for ``name`` in the ``kind`` registry; an unknown name lists the valid ones."""
        kind = ComponentKind(kind)
        reg = self.registries[kind]
        if name not in reg:
            valid = ", ".join(sorted(reg)) or "(none installed)"
            raise PluginError(f"unknown {kind.value} plugin {name!r}; valid names: {valid}")
        return reg[name]

    def entries(self) -> list[ComponentEntry]:
        """Every registered component, sorted by kind and name."""
        return [e for k in ComponentKind for _, e in sorted(self.registries[k].items())]

    def build(self, kind: ComponentKind | str, name: str, options: Any) -> Any:
        """Validate ``options`` with the plugin's ``Options`` model and build the component."""
        entry = self.get(kind, name)
        opts = options if isinstance(options, entry.cls.Options) else entry.cls.Options.model_validate(options or {})
        obj = entry.cls.from_options(opts)
        return obj


def _restriction() -> set[str] | None:
    raw = os.environ.get(ENV_RESTRICT)
    if raw is None:
        return None
    return {_canon(x) for x in raw.split(",") if x.strip()}


def _iter_entry_points() -> Iterable[metadata.EntryPoint]:
    return metadata.entry_points(group=ENTRY_POINT_GROUP)


def get_plugin_host(extra_plugins: Iterable[object] = ()) -> PluginHost:
    """Build a fresh plugin host: hook specs, entry points (honouring ``LYRA_PLUGINS``), then ``extra_plugins``.

    ``extra_plugins`` are objects or modules with ``@hookimpl`` functions, registered after the entry points
    (useful in tests and notebooks).
    """
    pm = pluggy.PluginManager("lyra_sdk")
    pm.add_hookspecs(hookspecs)
    allowed = _restriction()
    dists: dict[int, tuple[str, str]] = {}
    for ep in sorted(_iter_entry_points(), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        if allowed is not None and _canon(dist) != CORE_DISTRIBUTION and not ({_canon(ep.name), _canon(dist)} & allowed):
            continue
        if pm.has_plugin(ep.name):
            other = dists.get(id(pm.get_plugin(ep.name)), ("?", "?"))[0]
            raise PluginError(f"duplicate plugin entry point {ep.name!r}: provided by both {other} and {dist}")
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken third-party plugin must not take the whole SDK down
            log.warning("skipping plugin %s from %s: it failed to import (%s: %s)", ep.name, dist, type(exc).__name__, exc)
            continue
        pm.register(plugin, name=ep.name)
        dists[id(plugin)] = (dist, version)
    for i, plugin in enumerate(extra_plugins):
        pm.register(plugin, name=f"extra-{i}-{getattr(plugin, '__name__', type(plugin).__name__)}")
        dists[id(plugin)] = (getattr(plugin, "__name__", type(plugin).__name__), "local")
    pm.check_pending()
    return PluginHost(pm, dists)


@lru_cache(maxsize=1)
def default_host() -> PluginHost:
    """A host built once per process on first use (never at import time)."""
    return get_plugin_host()
