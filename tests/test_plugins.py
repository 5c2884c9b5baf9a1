"""The plugin host: discovery through entry points, registries, clear errors, LYRA_PLUGINS."""

from __future__ import annotations

import inspect

import pytest

from lyra_sdk import hookimpl, hookspecs
from lyra_sdk.errors import PluginError
from lyra_sdk.interfaces import ComponentKind
from lyra_sdk.plugins import get_plugin_host
from lyra_sdk.projectors import IdentityProjector


def test_builtin_and_third_party_plugins_are_discovered(host):
    names = {(e.kind.value, e.name): e.package for e in host.entries()}
    assert names[("projector", "simple_mlp")] == "lyra-sdk"
    assert names[("llm", "qwen2")] == "lyra-hf-llms"
    assert names[("llm", "llama")] == "lyra-hf-llms"
    assert names[("encoder", "logmel-patch")] == "lyra-example-encoder"


def test_unknown_name_lists_valid_names(host):
    with pytest.raises(PluginError) as exc:
        host.get(ComponentKind.LLM, "gpt5")
    assert "gpt5" in str(exc.value) and "qwen2" in str(exc.value) and "llama" in str(exc.value)


class _A:
    __name__ = "pkg_a"

    @hookimpl
    def register_projectors(self, register):
        register("twin", IdentityProjector)


class _B:
    __name__ = "pkg_b"

    @hookimpl
    def register_projectors(self, register):
        register("twin", IdentityProjector)


def test_duplicate_name_names_both_packages():
    with pytest.raises(PluginError) as exc:
        get_plugin_host(extra_plugins=[_A(), _B()])
    msg = str(exc.value)
    assert "twin" in msg and "pkg_a" in msg and "pkg_b" in msg


def test_duplicate_of_builtin_is_refused():
    class Clash:
        __name__ = "clash_pkg"

        @hookimpl
        def register_projectors(self, register):
            register("simple_mlp", IdentityProjector)

    with pytest.raises(PluginError, match="lyra-sdk.*clash_pkg|clash_pkg.*lyra-sdk"):
        get_plugin_host(extra_plugins=[Clash()])


def test_wrong_base_class_is_refused():
    class Bad:
        __name__ = "bad_pkg"

        @hookimpl
        def register_llms(self, register):
            register("notanllm", IdentityProjector)

    with pytest.raises(PluginError, match="LLMBackbone"):
        get_plugin_host(extra_plugins=[Bad()])


def test_invalid_name_is_refused():
    class Bad:
        __name__ = "bad_pkg"

        @hookimpl
        def register_projectors(self, register):
            register("Has Space", IdentityProjector)

    with pytest.raises(PluginError, match="invalid projector name"):
        get_plugin_host(extra_plugins=[Bad()])


def test_env_restricts_plugins(monkeypatch):
    monkeypatch.setenv("LYRA_PLUGINS", "lyra-example-encoder")
    h = get_plugin_host()
    kinds = {(e.kind.value, e.name) for e in h.entries()}
    assert ("encoder", "logmel-patch") in kinds
    assert ("projector", "simple_mlp") in kinds  # the core's own plugins always load
    assert ("llm", "qwen2") not in kinds
    monkeypatch.setenv("LYRA_PLUGINS", "")
    assert {e.package for e in get_plugin_host().entries()} == {"lyra-sdk"}


def test_every_hookspec_is_documented_and_takes_register():
    specs = [f for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("register_")]
    assert len(specs) == len(ComponentKind)
    for f in specs:
        assert f.__doc__ and list(inspect.signature(f).parameters) == ["register"]
