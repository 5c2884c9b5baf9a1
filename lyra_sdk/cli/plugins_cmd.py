"""``lyra plugins``: what the plugin host found."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Inspect installed plugins.", no_args_is_help=True)


@app.command("list")
def list_plugins(as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """List every registered component: kind, name, providing package and version."""
    from ..plugins import get_plugin_host

    entries = get_plugin_host().entries()
    if as_json:
        typer.echo(json.dumps([e.as_dict() for e in entries], indent=2))
        return
    table = Table("kind", "name", "package", "version")
    for e in entries:
        table.add_row(e.kind.value, e.name, e.package, e.version)
    Console().print(table)
