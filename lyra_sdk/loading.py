"""Finding a model: a saved folder, a config file, or the embedded default."""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import LyraError

DEFAULT_CONFIG = "tiny-speech.yaml"


def default_config_path() -> Path:
    """The embedded default config shipped inside the package."""
    return Path(str(resources.files("lyra_sdk") / "defaults" / DEFAULT_CONFIG))


def load_lyra(model: str | os.PathLike | None = None, config: str | os.PathLike | None = None,
              overrides: Sequence[str] = (), *, host: Any = None) -> tuple[Any, str | None]:
    """Load a saved model folder (``model``), build from a config file (``config``), or use the embedded default.

    Returns the model and a note for the user when its weights are random (None otherwise).
    """
    from .model import CONFIG_FILE, Lyra

    if model is not None and config is not None:
        raise LyraError("give either a model folder or a config file, not both")
    if model is not None:
        p = Path(model).expanduser()
        if p.is_file() and p.suffix in (".yaml", ".yml", ".json") and p.name != CONFIG_FILE:
            config, model = p, None
        else:
            if overrides:
                raise LyraError("--set overrides apply to config files, not to saved model folders")
            return Lyra.from_pretrained(p, host=host), None
    note = None
    if config is None:
        config = default_config_path()
        note = (f"no model given: using the embedded default '{DEFAULT_CONFIG}', a tiny model with RANDOM weights "
                "(its answers are noise); pass --model DIR or --config FILE for a real one")
    lyra = Lyra.from_config(config, overrides, host=host)
    if note is None and not _loads_weights(lyra):
        note = f"{config}: no component loads pretrained weights, so this model's weights are RANDOM"
    return lyra, note


def _loads_weights(lyra: Any) -> bool:
    for _, spec, _ in lyra.component_specs():
        opts = spec.options
        if any(opts.get(k) for k in ("path", "checkpoint", "weights")):
            return True
    return False
