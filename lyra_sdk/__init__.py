"""Lyra SDK: compose, train, evaluate and serve speech-centric omni models from plugins.

The public face: :class:`Lyra`, :class:`LyraConfig`, :data:`hookimpl`, :class:`Modality`, :func:`soft_dtw`
and the error hierarchy. Heavy submodules load on first attribute access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import CheckpointError, ConfigError, LyraError, MediaError, PluginError, PromptError
from .hookspecs import hookimpl
from .interfaces import Modality

__version__ = "0.1.0"

_LAZY = {
    "Lyra": ("lyra_sdk.model", "Lyra"),
    "LyraConfig": ("lyra_sdk.config", "LyraConfig"),
    "GenerationOptions": ("lyra_sdk.config", "GenerationOptions"),
    "soft_dtw": ("lyra_sdk.mechanisms.soft_dtw", "soft_dtw"),
    "lcmr_loss": ("lyra_sdk.mechanisms.lcmr", "lcmr_loss"),
    "get_plugin_host": ("lyra_sdk.plugins", "get_plugin_host"),
}

if TYPE_CHECKING:
    from .config import GenerationOptions, LyraConfig
    from .mechanisms.lcmr import lcmr_loss
    from .mechanisms.soft_dtw import soft_dtw
    from .model import Lyra
    from .plugins import get_plugin_host


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'lyra_sdk' has no attribute {name!r}")


__all__ = [
    "CheckpointError", "ConfigError", "GenerationOptions", "Lyra", "LyraConfig", "LyraError", "MediaError",
    "Modality", "PluginError", "PromptError", "get_plugin_host", "hookimpl", "lcmr_loss", "soft_dtw",
]
