"""Training data in the LLaVA / Lyra JSON format, validated up front, media loaded lazily per batch.

A dataset file is a JSON list of records::

    {"id": "q1",
     "conversations": [{"from": "human", "value": "<speech>\\nRecord the spoken words as text."},
                       {"from": "gpt", "value": "the quick brown fox"}],
     "speech": "audio/q1.wav",            # or a list of paths; also "image", "video", "sound"
     "speech_asr": "the quick brown fox", # transcript, for LCMR
     "tgt_unit": "<12><873><4>"}          # speech units of the answer, for the CTC speech head

Every problem is reported before training starts, naming the file, the record index (and id) and the field.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LyraError
from ..interfaces import ChatMessage, Modality
from ..prompt import Prompt, count_placeholders
from ..units import parse_units

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
MEDIA_FIELDS = {"speech": Modality.SPEECH, "image": Modality.IMAGE, "video": Modality.VIDEO, "sound": Modality.SOUND}
_KNOWN = {"id", "conversations", "speech_asr", "tgt_unit", *MEDIA_FIELDS}


class DataError(LyraError):
    """A dataset file or record is malformed; the message names file, record and field."""


@dataclass
class Sample:
    """One validated record: the prompt (with its answer), the transcript and target units if any."""

    prompt: Prompt
    transcript: str | None = None
    units: list[int] | None = None
    length: int = 0
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _fail(file: Path, index: int, rec: Any, fld: str, msg: str) -> DataError:
    rid = f" (id {rec.get('id')!r})" if isinstance(rec, dict) and "id" in rec else ""
    return DataError(f"{file.name}: record {index}{rid}: field {fld!r}: {msg}")


def _audio_seconds(path: Path) -> float:
    try:
        import soundfile as sf

        return float(sf.info(str(path)).duration)
    except Exception:  # any format soundfile cannot read is measured when loaded; estimate 30 s
        return 30.0


def parse_record(rec: Any, index: int, file: Path, media_root: Path) -> Sample:
    """Validate one record and turn it into a :class:`Sample` (media as paths, checked to exist)."""
    if not isinstance(rec, dict):
        raise DataError(f"{file.name}: record {index}: expected an object, got {type(rec).__name__}")
    unknown = sorted(set(rec) - _KNOWN)
    if unknown:
        raise _fail(file, index, rec, unknown[0], f"unknown field (known: {', '.join(sorted(_KNOWN))})")
    conv = rec.get("conversations")
    if not isinstance(conv, list) or len(conv) < 2:
        raise _fail(file, index, rec, "conversations", "must be a list of at least one human and one gpt turn")
    turns: list[ChatMessage] = []
    for t, turn in enumerate(conv):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or turn.get("from") not in ROLES:
            raise _fail(file, index, rec, f"conversations[{t}]", "each turn needs 'from' (human/gpt) and a string 'value'")
        role = ROLES[turn["from"]]
        if role != ("user" if t % 2 == 0 else "assistant"):
            raise _fail(file, index, rec, f"conversations[{t}]", "turns must alternate human, gpt, human, gpt, ...")
        turns.append(ChatMessage(role, turn["value"]))
    if turns[-1].role != "assistant":
        raise _fail(file, index, rec, "conversations", "the last turn must be from gpt (the answer)")
    media: dict[Modality, list[str]] = {}
    seconds = 0.0
    for fld, modality in MEDIA_FIELDS.items():
        if fld not in rec:
            continue
        value = rec[fld]
        paths = [value] if isinstance(value, str) else value
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise _fail(file, index, rec, fld, "must be a path or a non-empty list of paths")
        resolved = []
        for p in paths:
            full = Path(p) if Path(p).is_absolute() else media_root / p
            if not full.is_file():
                raise _fail(file, index, rec, fld, f"media file not found: {full}")
            if modality in (Modality.SPEECH, Modality.SOUND):
                seconds += _audio_seconds(full)
            resolved.append(str(full))
        media[modality] = resolved
    counts = count_placeholders("".join(t.content for t in turns if t.role == "user"))
    for modality in set(counts) | set(media):
        if counts.get(modality, 0) != len(media.get(modality, [])):
            raise _fail(file, index, rec, "conversations",
                        f"{counts.get(modality, 0)} {modality.placeholder} placeholder(s) but "
                        f"{len(media.get(modality, []))} {modality.value} file(s)")
    transcript = rec.get("speech_asr")
    if transcript is not None and (not isinstance(transcript, str) or not transcript.strip()):
        raise _fail(file, index, rec, "speech_asr", "must be a non-empty string")
    units = None
    if "tgt_unit" in rec:
        if not isinstance(rec["tgt_unit"], str):
            raise _fail(file, index, rec, "tgt_unit", "must be a unit string like '<12><873><4>'")
        try:
            units = parse_units(rec["tgt_unit"])
        except LyraError as exc:
            raise _fail(file, index, rec, "tgt_unit", str(exc)) from None
    prompt = Prompt(turns[-2].content, {m.value: v for m, v in media.items()}, answer=turns[-1].content,
                    history=turns[:-2])
    text_chars = sum(len(t.content) for t in turns)
    length = text_chars // 3 + int(seconds * 10) + 300 * len(media.get(Modality.IMAGE, []))
    return Sample(prompt, transcript, units, length, f"{file.name}#{index}")


def load_dataset(path: str | Path, media_root: str | Path | None = None, max_length: int | None = None) -> list[Sample]:
    """Read and validate a whole dataset file; the first problem found is raised as a :class:`DataError`."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"dataset file not found: {file}")
    try:
        records = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{file.name}: not valid JSON: {exc}") from None
    if not isinstance(records, list) or not records:
        raise DataError(f"{file.name}: expected a non-empty JSON list of records")
    root = Path(media_root) if media_root is not None else file.parent
    samples = [parse_record(r, i, file, root) for i, r in enumerate(records)]
    if max_length is not None:
        for i, s in enumerate(samples):
            if s.length > max_length:
                raise DataError(f"{file.name}: record {i}: about {s.length} tokens, over data.max_length={max_length}")
    return samples


def batch_order(lengths: Sequence[int], batch_size: int, world_size: int, seed: int, epoch: int,
                group_by_length: bool = True) -> list[list[int]]:
    """Global batches (each ``batch_size * world_size`` indices) for one epoch, deterministic in (seed, epoch).

    With ``group_by_length``, indices are shuffled, cut into mega-batches of 16 global batches, sorted by length
    inside each (similar lengths share a batch, less padding), and the batch order is shuffled again.
    Trailing samples that do not fill a global batch are dropped so every rank sees the same number of steps.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    gbs = batch_size * world_size
    if group_by_length:
        mega = gbs * 16
        idx = [i for k in range(0, len(idx), mega) for i in sorted(idx[k : k + mega], key=lambda j: -lengths[j])]
    batches = [idx[k : k + gbs] for k in range(0, len(idx) - gbs + 1, gbs)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def steps_per_epoch(n: int, batch_size: int, world_size: int) -> int:
    """Global batches per epoch."""
    return n // (batch_size * world_size)


def iterate(samples: Sequence[Sample], batch_size: int, world_size: int, rank: int, seed: int,
            start_epoch: int = 0, start_batch: int = 0, group_by_length: bool = True
            ) -> Iterator[tuple[int, int, list[Sample]]]:
    """Endless (epoch, batch index, this rank's samples), resumable from (start_epoch, start_batch)."""
    if steps_per_epoch(len(samples), batch_size, world_size) == 0:
        raise DataError(f"{len(samples)} samples cannot fill one batch of {batch_size} x {world_size} process(es)")
    epoch, first = start_epoch, start_batch
    lengths = [s.length for s in samples]
    while True:
        for b, glob in enumerate(batch_order(lengths, batch_size, world_size, seed, epoch, group_by_length)):
            if b < first:
                continue
            yield epoch, b, [samples[i] for i in glob[rank * batch_size : (rank + 1) * batch_size]]
        epoch, first = epoch + 1, 0


def estimate_epochs(n: int, batch_size: int, world_size: int, steps: int) -> float:
    """How many epochs ``steps`` micro-batches take."""
    return steps / max(1, steps_per_epoch(n, batch_size, world_size))


__all__ = ["DataError", "Sample", "batch_order", "estimate_epochs", "iterate", "load_dataset", "parse_record",
           "steps_per_epoch"]
