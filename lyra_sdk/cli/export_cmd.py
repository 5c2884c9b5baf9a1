"""``lyra export``: re-save a model folder: a LoRA route merged into the LLM, or a small folder that
references its pretrained base weights instead of copying them."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

err = Console(stderr=True, highlight=False)


def export(
    out: Path = typer.Argument(..., help="output folder"),
    model: Path | None = typer.Option(None, "--model", "-m", help="saved model folder (e.g. runs/NAME/final)"),
    config: Path | None = typer.Option(None, "--config", "-c", help="model config"),
    merge: str | None = typer.Option(None, "--merge", help="merge this LoRA route (and its projector) into the LLM"),
    reference_sources: bool = typer.Option(False, "--reference-sources",
                                           help="leave out frozen weights that load from their sources (pkg:, paths); "
                                                "keep trained ones (projectors, LoRA)"),
    dtype: str | None = typer.Option(None, "--dtype", help="storage dtype of the saved tensors: float16, bfloat16, float32"),
    overrides: list[str] = typer.Option(None, "--set", "-s", help="dotted config override saved with the export, "
                                        "e.g. speech_compression.decode=beam"),
) -> None:
    """Write a model folder loadable with --model / Lyra.from_pretrained: with --merge, a plain model with a
    LoRA route merged; with --reference-sources, only the trained weights (a few MB over packaged bases)."""
    from ..errors import LyraError
    from ..loading import load_lyra

    if model is None and config is None:
        raise LyraError("give --model DIR or --config FILE")
    if merge is None and not reference_sources and dtype is None:
        raise LyraError("nothing to do: give --merge ROUTE, --reference-sources and/or --dtype")
    if merge is not None and reference_sources:
        raise LyraError("--merge changes the LLM's weights, so they cannot be referenced from their source")
    if out.exists() and any(out.iterdir()):
        raise LyraError(f"output folder {out} exists and is not empty")
    lyra, _ = load_lyra(model, config, overrides or [])
    if merge is not None:
        if dtype is not None:
            raise LyraError("--dtype applies to --reference-sources exports, not to --merge")
        lyra.export_merged(merge, out)
        err.print(f"wrote {out}: route {merge!r} merged")
        return
    lyra.save_pretrained(out, reference_sources=reference_sources, dtype=dtype)
    size = (out / "model.safetensors").stat().st_size / 2**20
    err.print(f"wrote {out} ({size:.1f} MiB of weights)")
