"""``lyra train``: run a training config, or resume a run folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

err = Console(stderr=True, highlight=False)


def train(
    config: Path | None = typer.Argument(None, help="training config (YAML/JSON)"),
    overrides: list[str] | None = typer.Argument(None, help="dotted overrides, e.g. optim.lr=5e-4 run.output_dir=runs/x"),
    resume: Path | None = typer.Option(None, "--resume", help="run folder to resume from its last checkpoint"),
    stop_at: int | None = typer.Option(None, "--stop-at", min=1, help="stop (checkpointed) after this step, as an interruption would"),
) -> None:
    """Train one stage (what trains comes from the config); the run folder gets the resolved config, log.jsonl,
    loss.png, checkpoints/ and final/ (load it with Lyra.from_pretrained)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..errors import LyraError
    from ..training import TrainConfig, Trainer, write_run_config
    from ..training.trainer import CONFIG_NAME

    if (config is None) == (resume is None):
        raise LyraError("give a training config, or --resume RUN_DIR (not both)")
    if resume is not None:
        if overrides:
            raise LyraError("overrides cannot change a run being resumed")
        if not (resume / CONFIG_NAME).exists():
            raise LyraError(f"{resume} is not a run folder: {CONFIG_NAME} is missing")
        cfg = TrainConfig.load(resume / CONFIG_NAME)
        run_dir = resume
    else:
        cfg = TrainConfig.load(config, overrides or [])
        run_dir = cfg.path(cfg.run.output_dir)
    bar = Progress(TextColumn(f"[bold]{cfg.stage}[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                   TimeRemainingColumn(), console=err)
    task = bar.add_task("train", total=cfg.optim.max_steps, info="")

    def on_log(rec: dict) -> None:
        if "loss" in rec:
            terms = " ".join(f"{k}={rec[k]:.3f}" for k in ("loss", "ce", "lcmr", "ctc") if k in rec)
            bar.update(task, completed=rec["step"], info=terms)
        elif any(k.startswith("eval_") for k in rec):
            err.print(f"step {rec['step']}: " + " ".join(f"{k}={v:.3f}" for k, v in rec.items() if k.startswith("eval_")))

    trainer = Trainer(cfg, run_dir, resume=resume is not None, on_log=on_log)
    try:
        if trainer.ctx.rank == 0 and resume is None:
            write_run_config(cfg, run_dir)
        bar.update(task, completed=trainer.state.step)
        with bar if trainer.ctx.rank == 0 else _quiet():
            result = trainer.train(stop_at=stop_at)
    finally:
        trainer.close()
    if trainer.ctx.rank == 0:
        if "stopped_at" in result:
            err.print(f"stopped after step {result['stopped_at']}; resume with: lyra train --resume {run_dir}")
        else:
            err.print(f"done: {run_dir}/final (loss curve: {run_dir}/loss.png)")


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
