"""``lyra config``: validate and show configuration files."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

app = typer.Typer(help="Validate and show model configurations.", no_args_is_help=True)

OverridesOpt = typer.Option(None, "--set", "-s", help="dotted override, e.g. llm.options.config.num_hidden_layers=2")


@app.command("validate")
def validate(file: Path = typer.Argument(..., help="YAML or JSON config"), overrides: list[str] = OverridesOpt) -> None:
    """Check a config: structure, plugin names and every plugin's options. Lists all problems at once."""
    from ..config import LyraConfig

    cfg = LyraConfig.load(file, overrides or [])
    parts = ", ".join(f"{path}={spec.plugin}" for path, _, spec in cfg.components())
    typer.echo(f"ok: {file} ({parts})")


@app.command("show")
def show(file: Path = typer.Argument(..., help="YAML or JSON config"), overrides: list[str] = OverridesOpt,
         as_json: bool = typer.Option(False, "--json", help="print JSON instead of YAML")) -> None:
    """Print the resolved config: overrides applied and every plugin default filled in."""
    import json

    from ..config import LyraConfig

    cfg = LyraConfig.load(file, overrides or [])
    data = cfg.to_dict()
    typer.echo(json.dumps(data, indent=2) if as_json else yaml.safe_dump(data, sort_keys=False).rstrip())
