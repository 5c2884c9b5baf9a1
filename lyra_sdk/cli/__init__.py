"""The ``lyra`` command line: a table of sub-commands over library functions; it holds no model logic.

User mistakes (any :class:`~lyra_sdk.LyraError`, a bad option) print one clear message and exit with code 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import click
import typer
from rich.console import Console

from ..errors import LyraError
from . import config_cmd, estimate_cmd, eval_cmd, export_cmd, info_cmd, plugins_cmd, run_cmd, train_cmd, vocode_cmd

err = Console(stderr=True, highlight=False)
# typer >= 0.20 vendors its own click; catch usage errors from either.
_CLICK_ERRORS = (click.ClickException, typer.TyperException)

app = typer.Typer(name="lyra", help="Lyra SDK: run, inspect and train speech-centric omni models.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.command("run")(run_cmd.run)
app.command("info")(info_cmd.info)
app.command("estimate")(estimate_cmd.estimate)
app.command("vocode")(vocode_cmd.vocode)
app.command("export")(export_cmd.export)
app.command("train")(train_cmd.train)
app.command("eval")(eval_cmd.evaluate)
app.add_typer(plugins_cmd.app, name="plugins")
app.add_typer(config_cmd.app, name="config")


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(args=list(argv) if argv is not None else None, prog_name="lyra", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except _CLICK_ERRORS as exc:
        exc.show()
        return exc.exit_code
    except (typer.Abort, click.exceptions.Abort):
        err.print("aborted")
        return 1
    except LyraError as exc:
        err.print(f"[bold red]error:[/] {exc}", markup=True, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    return 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run_cli())
