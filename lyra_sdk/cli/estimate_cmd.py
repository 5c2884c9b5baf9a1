"""``lyra estimate``: tokens and memory for long speech, before anyone runs out of memory."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def estimate(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML/JSON model config (default: embedded)"),
    overrides: list[str] = typer.Option(None, "--set", "-s", help="dotted config override"),
    speech_seconds: float = typer.Option(..., "--speech-seconds", min=0.001, help="length of the recording"),
    prompt_tokens: int = typer.Option(64, "--prompt-tokens", min=0, help="text tokens around the speech"),
    new_tokens: int = typer.Option(256, "--new-tokens", min=0, help="tokens to generate"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Speech windows, LLM tokens and a peak-memory estimate for one recording (nothing is allocated)."""
    from ..estimate import estimate_speech, gib
    from ..loading import default_config_path
    from ..model import Lyra

    lyra = Lyra.from_config(config or default_config_path(), overrides or [], device="meta")
    est = estimate_speech(lyra, speech_seconds, prompt_tokens, new_tokens)
    if as_json:
        typer.echo(json.dumps(est.as_dict(), indent=2))
        return
    t = Table("quantity", "value", title=f"{lyra.config.name}: {speech_seconds:g} s of speech")
    t.add_row("30 s windows" if lyra.encoders["speech"].window_seconds == 30 else "windows", f"{est.windows:,}")
    t.add_row("speech tokens", f"{est.speech_tokens:,}")
    for label, value in [("weights", est.weights), ("speech token embeddings", est.token_embeddings),
                         ("KV cache (prompt + speech + answer)", est.kv_cache),
                         ("prefill activations (one layer)", est.prefill_activations),
                         ("encoder batch", est.encoder_batch), ("estimated peak", est.total)]:
        t.add_row(label, gib(value))
    Console().print(t)
