"""``lyra vocode``: units -> a wav file, with any registered vocoder plugin."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

err = Console(stderr=True, highlight=False)


def vocode(
    units: str = typer.Option(..., "--units", help="'12 873 4 ...' or '<12><873><4>...'"),
    out: Path = typer.Option(..., "--out", help="output wav file"),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="vocoder checkpoint (e.g. fairseq g_00500000)"),
    config: Path | None = typer.Option(None, "--config", help="the vocoder's config.json"),
    dur_prediction: bool = typer.Option(False, "--dur-prediction", help="repeat units by predicted durations"),
    vocoder: str = typer.Option("unit-hifigan", "--vocoder", help="vocoder plugin name"),
) -> None:
    """Vocode discrete speech units into a 16-bit wav."""
    from ..errors import LyraError
    from ..interfaces import ComponentKind
    from ..media.audio import WavWriter
    from ..plugins import default_host
    from ..units import parse_units

    ids = parse_units(units)
    for p in (checkpoint, config):
        if p is not None and not p.exists():
            raise LyraError(f"file not found: {p}")
    if checkpoint is None:
        err.print("[yellow]note:[/] no --checkpoint: vocoding with RANDOM weights (noise)")
    opts = {"checkpoint": str(checkpoint) if checkpoint else None, "config": str(config) if config else None,
            "dur_prediction": dur_prediction}
    voc = default_host().build(ComponentKind.VOCODER, vocoder, opts).eval()
    wav = voc.synthesize(ids)
    with WavWriter(out, voc.sample_rate) as w:
        w.write(wav.detach().float().cpu().numpy())
    err.print(f"wrote {out}: {w.seconds:.2f} s at {voc.sample_rate} Hz from {len(ids)} units")
