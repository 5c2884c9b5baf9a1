"""``lyra info``: parameters per component and in total, without allocating weights."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def info(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML/JSON model config"),
    model: Path | None = typer.Option(None, "--model", "-m", help="saved model folder"),
    overrides: list[str] = typer.Option(None, "--set", "-s", help="dotted config override"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Print parameter counts per component and in total (built on the meta device: no memory needed)."""
    from ..config import LyraConfig
    from ..errors import LyraError
    from ..inspect import human, parameter_report
    from ..loading import default_config_path
    from ..model import CONFIG_FILE, Lyra

    if config is not None and model is not None:
        raise LyraError("give either --config or --model, not both")
    if model is not None:
        cfg_file = Path(model) / CONFIG_FILE
        if not cfg_file.exists():
            raise LyraError(f"{model} is not a Lyra model folder: {CONFIG_FILE} is missing")
        cfg = LyraConfig.from_dict(json.loads(cfg_file.read_text()), overrides or [], source=str(cfg_file),
                                   base_dir=Path(model).resolve())
    else:
        cfg = LyraConfig.load(config or default_config_path(), overrides or [])
    lyra = Lyra.from_config(cfg, device="meta")
    rows = parameter_report(lyra)
    total = sum(r.total for r in rows)
    if as_json:
        typer.echo(json.dumps({"name": cfg.name, "total": total,
                               "components": [r.__dict__ for r in rows]}, indent=2))
        return
    table = Table("component", "plugin", "parameters", "trainable", title=f"{cfg.name}: {human(total)} parameters")
    for r in rows:
        table.add_row(r.path, r.plugin, f"{r.total:,} ({human(r.total)})", f"{r.trainable:,}")
    table.add_row("total", "", f"{total:,} ({human(total)})", f"{sum(r.trainable for r in rows):,}")
    Console().print(table)
