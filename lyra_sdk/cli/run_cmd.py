"""``lyra run``: answer one prompt with text (and media)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import typer
from rich.console import Console

err = Console(stderr=True, highlight=False)


def run(
    model: Path | None = typer.Option(None, "--model", "-m", help="saved model folder (lyra_config.json + weights)"),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML/JSON model config (weights as it says)"),
    overrides: list[str] = typer.Option(None, "--set", "-s", help="dotted config override, e.g. generation.max_new_tokens=64"),
    prompt: str | None = typer.Option(None, "--prompt", "-p", help="the user text; may hold <speech>, <image>, ... placeholders"),
    speech: list[Path] = typer.Option(None, "--speech", help="speech audio file (repeatable)"),
    image: list[Path] = typer.Option(None, "--image", help="image file (repeatable)"),
    video: list[Path] = typer.Option(None, "--video", help="video file (repeatable)"),
    sound: list[Path] = typer.Option(None, "--sound", help="non-speech audio file (repeatable)"),
    video_audio: bool = typer.Option(False, "--video-audio", help="also use each video's audio track as speech"),
    system: str | None = typer.Option(None, "--system", help="system prompt (default: the config's)"),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", min=1, help="generation length limit"),
    temperature: float | None = typer.Option(None, "--temperature", min=0.0, help="0 = greedy"),
    top_p: float | None = typer.Option(None, "--top-p", min=0.0, max=1.0, help="nucleus sampling mass"),
    seed: int | None = typer.Option(None, "--seed", help="sampling seed (same seed, same answer)"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps"),
    generate_speech: bool = typer.Option(False, "--generate-speech", help="also answer in speech (needs a speech decoder and vocoder)"),
    out_speech: Path | None = typer.Option(None, "--out-speech", help="wav file for the spoken answer"),
    stream: bool = typer.Option(False, "--stream", help="write the spoken answer to --out-speech as it is generated"),
    route: str = typer.Option("auto", "--route", help="LoRA route: auto (the router decides), none, or a route name"),
    extract_keep: float | None = typer.Option(None, "--extract-keep", min=0.0, max=1.0,
                                              help="LMME: fraction of media tokens kept at each pruning step (1 = off)"),
    extract_gap: int = typer.Option(7, "--extract-gap", min=1, help="LMME: prune after every N decoder layers"),
    show_heard: bool = typer.Option(False, "--show-heard", help="also print (to stderr) what the model heard in the "
                                    "speech: the word pieces its LLM read (models with speech_compression)"),
) -> None:
    """Answer a prompt. Media given without a placeholder in the prompt are put before the text
    (images, videos, sounds, then speech: with no --prompt the speech is the instruction)."""
    from ..devices import resolve_device
    from ..errors import LyraError
    from ..interfaces import Modality
    from ..loading import load_lyra
    from ..prompt import DEFAULT_SYSTEM, Prompt, count_placeholders

    media = {Modality.IMAGE: image or [], Modality.VIDEO: video or [], Modality.SOUND: sound or [],
             Modality.SPEECH: (speech or []) + ((video or []) if video_audio else [])}
    for items in media.values():
        for p in items:
            if not p.exists():
                raise LyraError(f"file not found: {p}")
    if not (prompt or "").strip() and not any(media.values()):
        what = "the prompt is empty" if prompt is not None else "nothing to answer"
        raise LyraError(f"{what}: give --prompt and/or media (--speech, --image, --video, --sound)")
    text = prompt or ""
    counts = count_placeholders(text)
    lead = [m.placeholder for m, items in media.items() for _ in items if counts.get(m, 0) == 0]
    if lead:
        text = "\n".join(lead + ([text] if text else []))
    lyra, note = load_lyra(model, config, overrides or [])
    if note:
        err.print(f"[yellow]note:[/] {note}")
    lyra.to(resolve_device(device))
    gen = {k: v for k, v in {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
                             "seed": seed}.items() if v is not None}
    p = Prompt(text, {m: [str(x) for x in items] for m, items in media.items() if items},
               system=system if system is not None else DEFAULT_SYSTEM)
    if generate_speech or out_speech is not None or stream:
        if out_speech is None:
            raise LyraError("--generate-speech needs --out-speech FILE.wav")
        _speak(lyra, p, out_speech, stream, gen)
        return
    with media_progress() as progress:
        extraction = {"keep": extract_keep, "gap": extract_gap} if extract_keep is not None else None
        heard: list[str | None] = []  # filled only with --show-heard (a read-out of hours of speech is not free)
        answer = lyra.generate([p], progress=progress, route=None if route == "none" else route,
                               extraction=extraction, heard=heard if show_heard else None, **gen)[0]
    if show_heard:
        if heard[0] is not None:
            err.print(f"heard: {heard[0].strip()}", markup=False, highlight=False)
        elif media[Modality.SPEECH]:
            err.print("[yellow]note:[/] this model does not turn speech into word pieces (no speech_compression), "
                      "so there is no transcript to show")
    if not answer.strip():
        err.print("[yellow]note:[/] the model's answer is empty (it ended its turn at once)")
    typer.echo(answer)


def _speak(lyra, prompt, out: Path, stream: bool, gen: dict) -> None:
    """Write the spoken answer to ``out`` (chunk by chunk when streaming) and print the text."""
    from ..media.audio import WavWriter

    if stream:
        text, n = "", 0
        with WavWriter(out, lyra.vocoder.sample_rate, atomic=False) as wav:
            for chunk in lyra.stream_speech(prompt, **gen):
                wav.write(chunk.audio.numpy())
                text, n = chunk.text, n + 1
        typer.echo(text)
        err.print(f"wrote {out} ({wav.seconds:.2f} s in {n} streamed chunk(s))")
        return
    answer = lyra.generate_speech(prompt, **gen)
    with WavWriter(out, answer.sample_rate) as wav:
        wav.write(answer.waveform.numpy())
    typer.echo(answer.text)
    err.print(f"wrote {out} ({wav.seconds:.2f} s, {len(answer.units)} units)")


@contextlib.contextmanager
def media_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar on stderr that appears only for media spanning several encoder windows."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("encoding {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err, transient=True)
    tasks: dict[str, int] = {}

    def update(label: str, done: int, total: int) -> None:
        if total <= 2:
            return
        if label not in tasks:
            bar.start()
            tasks[label] = bar.add_task(f"{label} (30 s windows)", total=total)
        bar.update(tasks[label], completed=done)

    try:
        yield update
    finally:
        bar.stop()
