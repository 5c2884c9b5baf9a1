"""Hook specifications: each hook hands the plugin a ``register(name, component_class)`` callback.

A plugin module implements any of these with ``@lyra_sdk.hookimpl`` and is announced through the
``lyra_sdk`` entry-point group of its package, exactly like the SDK's built-in plugins.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("lyra_sdk")
hookimpl = pluggy.HookimplMarker("lyra_sdk")

Register = Callable[[str, type], None]
"""``register(name, component_class)``: adds a component under ``name`` to one registry."""


@hookspec
def register_encoders(register: Register) -> None:
    """Register media encoders: subclasses of :class:`lyra_sdk.interfaces.Encoder`."""


@hookspec
def register_projectors(register: Register) -> None:
    """Register projectors: subclasses of :class:`lyra_sdk.interfaces.Projector`."""


@hookspec
def register_llms(register: Register) -> None:
    """Register LLM backbones: subclasses of :class:`lyra_sdk.interfaces.LLMBackbone`."""


@hookspec
def register_lora_routers(register: Register) -> None:
    """Register LoRA routers: subclasses of :class:`lyra_sdk.interfaces.LoraRouter`."""


@hookspec
def register_extractors(register: Register) -> None:
    """Register latent extractors: subclasses of :class:`lyra_sdk.interfaces.LatentExtractor`."""


@hookspec
def register_speech_decoders(register: Register) -> None:
    """Register speech decoders: subclasses of :class:`lyra_sdk.interfaces.SpeechDecoder`."""


@hookspec
def register_vocoders(register: Register) -> None:
    """Register vocoders: subclasses of :class:`lyra_sdk.interfaces.Vocoder`."""
