"""``lyra export``: write a standalone model with one LoRA route merged into the LLM."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

err = Console(stderr=True, highlight=False)


def export(
    merge: str = typer.Option(..., "--merge", help="the LoRA route to merge (e.g. speech)"),
    out: Path = typer.Argument(..., help="output folder for the merged model"),
    model: Path | None = typer.Option(None, "--model", "-m", help="saved model folder with LoRA adapters"),
    config: Path | None = typer.Option(None, "--config", "-c", help="model config with LoRA adapters"),
) -> None:
    """Merge LoRA route ROUTE (and its projector) into a plain model folder loadable without adapters."""
    from ..errors import LyraError
    from ..loading import load_lyra

    if model is None and config is None:
        raise LyraError("give --model DIR or --config FILE")
    if out.exists() and any(out.iterdir()):
        raise LyraError(f"output folder {out} exists and is not empty")
    lyra, _ = load_lyra(model, config)
    lyra.export_merged(merge, out)
    err.print(f"wrote {out}: route {merge!r} merged")
