"""Speech answers: LLM hidden states -> speech decoder units -> vocoder audio, offline or streamed.

Streaming is real: each generated text token's hidden state goes through the speech decoder's incremental
stream as soon as the token exists, new units go straight to the vocoder's chunked stream, and audio comes out
while text is still being generated. The hidden state used for a token is the LLM's last-layer state *at* that
token's position (the one training uses), taken when the token is fed back in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .config import GenerationOptions
from .errors import LyraError
from .generation import iter_tokens


@dataclass
class SpeechAnswer:
    """A spoken answer: the text, its units and the (S,) waveform at ``sample_rate``."""

    text: str
    token_ids: list[int]
    units: list[int]
    waveform: Tensor
    sample_rate: int


@dataclass
class SpeechChunk:
    """One streamed piece: new audio, plus the text and units generated so far (cumulative)."""

    audio: Tensor
    text: str
    units: list[int] = field(default_factory=list)


def _check(model: Any) -> None:
    if model.speech_decoder is None or model.vocoder is None:
        missing = [n for n, c in (("speech_decoder", model.speech_decoder), ("vocoder", model.vocoder)) if c is None]
        raise LyraError(f"this model cannot speak: its config has no {' and no '.join(missing)}")


def _steps(model: Any, prompt: Any, options: GenerationOptions) -> Iterator[tuple[int, Tensor]]:
    """(token id, hidden (D,)) for each answer token of a single prompt (stop tokens excluded)."""
    batch = model.prepare([prompt], padding_side="left", refuse_wordless_speech=True)
    for step in iter_tokens(model.llm, batch.inputs_embeds, batch.attention_mask, model.position_ids(batch),
                            options, with_hidden=True, media_mask=batch.media_mask, extractor=model.extractor):
        if bool(step.active[0]) and not bool(step.stopped[0]):
            yield int(step.tokens[0]), step.hidden[0]


@torch.no_grad()
def generate_speech(model: Any, prompt: Any, options: GenerationOptions) -> SpeechAnswer:
    """Generate the whole text, then decode all units and vocode them at once."""
    _check(model)
    ids, hidden = [], []
    for token, h in _steps(model, prompt, options):
        ids.append(token)
        hidden.append(h)
    text = model.llm.tokenizer.decode(ids, skip_special_tokens=True)
    if not hidden:
        return SpeechAnswer(text, ids, [], torch.zeros(0), model.vocoder.sample_rate)
    hs = torch.stack(hidden)[None]  # (1, n, D)
    units = model.speech_decoder.decode(hs, torch.ones(hs.shape[:2], dtype=torch.bool, device=hs.device))[0]
    wav = model.vocoder.synthesize(units) if units else torch.zeros(0)
    return SpeechAnswer(text, ids, units, wav.detach().float().cpu(), model.vocoder.sample_rate)


@torch.no_grad()
def stream_speech(model: Any, prompt: Any, options: GenerationOptions) -> Iterator[SpeechChunk]:
    """Yield audio chunks while the answer is being generated; their concatenation is the answer's audio."""
    _check(model)
    ids: list[int] = []
    units_so_far: list[int] = []
    unit_stream = model.speech_decoder.stream()

    def unit_packets() -> Iterator[list[int]]:
        for token, h in _steps(model, prompt, options):
            ids.append(token)
            new = unit_stream.push(h[None])
            units_so_far.extend(new)
            if new:
                yield new
        tail = unit_stream.flush()
        units_so_far.extend(tail)
        if tail:
            yield tail

    for audio in model.vocoder.stream(unit_packets()):
        text = model.llm.tokenizer.decode(ids, skip_special_tokens=True)
        yield SpeechChunk(audio.detach().float().cpu(), text, list(units_so_far))
