"""What every pluggable component shares: a kind, typed options and a constructor from those options."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict


class Modality(str, Enum):
    """An input medium and the placeholder that marks it in prompt text (``<speech>``, ``<image>``, ...)."""

    SPEECH = "speech"
    IMAGE = "image"
    VIDEO = "video"
    SOUND = "sound"

    @property
    def placeholder(self) -> str:
        """The placeholder text, e.g. ``"<speech>"``."""
        return f"<{self.value}>"


class ComponentKind(str, Enum):
    """The registries of the plugin host: one per kind of component."""

    ENCODER = "encoder"
    PROJECTOR = "projector"
    LLM = "llm"
    LORA_ROUTER = "lora_router"
    EXTRACTOR = "extractor"
    SPEECH_DECODER = "speech_decoder"
    VOCODER = "vocoder"


class PluginOptions(BaseModel):
    """Base of every plugin's ``Options`` model: unknown keys are refused.

    ``runtime_fields`` names the options that change how a component runs, not which weights it loads: a
    ``save_pretrained(reference_sources=True)`` keeps their current values over those recorded with the source
    (an option changed by an override after the weights first loaded survives the save).
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    runtime_fields: ClassVar[frozenset[str]] = frozenset()


class Configurable:
    """Mixin for anything a plugin registers: a nested ``Options`` model and ``from_options``.

    Subclasses set ``Options`` to a :class:`PluginOptions` subclass and implement :meth:`from_options`.
    ``saved_options`` returns the options that rebuild the same architecture without reading any external
    weight file (``Lyra.save_pretrained`` writes these; the weights come from the saved safetensors).
    """

    Options: ClassVar[type[PluginOptions]] = PluginOptions
    options: PluginOptions

    @classmethod
    def from_options(cls, options: Any) -> Self:
        """Build the component from a validated ``Options`` instance."""
        raise NotImplementedError(f"{cls.__name__} does not implement from_options")

    def saved_options(self) -> PluginOptions:
        """Options that rebuild this component's architecture with no external weight file."""
        return self.options

    def export(self, directory: Path) -> PluginOptions:
        """Write non-weight assets (a tokenizer, ...) under ``directory`` and return the options to save.

        Relative paths in the returned options are resolved against the saved model folder on load.
        The default writes nothing and returns :meth:`saved_options`.
        """
        return self.saved_options()
