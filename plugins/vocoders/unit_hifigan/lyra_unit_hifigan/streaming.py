"""Streaming vocoding: units arrive a few at a time, audio leaves in chunks equal to offline vocoding.

Design. The generator is a stack of non-causal convolutions, so the audio of frame j depends only on frames
``j - left .. j + right`` (:func:`receptive_field_frames`; 21 and 21 for the Lyra vocoder). The stream keeps
the frames it has received and, once ``chunk`` new frames have at least ``right`` frames of look-ahead, runs
the generator on ``[start - left, end + right)`` and emits the samples of ``[start, end)``. Inside such a
window every convolution sees exactly the inputs it sees offline (its zero padding only touches the
discarded context), so the concatenated chunks equal offline vocoding up to float rounding (measured: max
abs difference ~1e-7 in fp32, see the README). At the end of the stream the rest is vocoded without
look-ahead, as offline vocoding pads with zeros there too.

Duration prediction runs first, on units: the predictor's two convs give each duration a context of
:func:`duration_context_units` units per side (2), so durations are final once 2 later units are known
(or the stream ends); they are computed on a window with that context and the repeated units feed the
frame stream above. Durations are integers rounded from floats; a prediction within float rounding of a
``.5`` boundary could round differently from offline (never observed).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor

from .config import duration_context_units, receptive_field_frames
from .model import CodeHiFiGAN, InvalidUnitsError


class StreamingVocoder:
    """Incremental vocoding state for one utterance: :meth:`push` units, then :meth:`flush`.

    ``context`` overrides the (left, right) frame context (smaller values trade exactness for latency);
    ``chunk`` is the minimum number of new frames vocoded per step (latency vs. recomputed context).
    ``spkr`` is the speaker id (or external speaker embedding) of a multi-speaker vocoder.
    """

    def __init__(self, model: CodeHiFiGAN, dur_prediction: bool = False, chunk: int = 25,
                 context: tuple[int, int] | int | None = None, spkr: Tensor | int | None = None) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1 frame, got {chunk}")
        if dur_prediction and model.dur_predictor is None:
            raise InvalidUnitsError("duration prediction requested but this vocoder has no dur_predictor")
        self.model = model
        self.dur_prediction = dur_prediction
        self.chunk = chunk
        if context is None:
            context = receptive_field_frames(model.cfg)
        self.left, self.right = (context, context) if isinstance(context, int) else context
        self.dur_context = duration_context_units(model.cfg)
        self.spkr = torch.as_tensor([spkr]) if isinstance(spkr, int) else spkr
        self._units: list[int] = []  # units not yet expanded, plus dur_context units of left context
        self._units_base = 0  # stream index of self._units[0]
        self._units_done = 0  # units whose durations are final (stream index)
        self._frames: list[int] = []  # frame ids from self._frames_base on
        self._frames_base = 0
        self._frames_done = 0  # frames whose audio was emitted (stream index)
        self._finished = False

    @property
    def device(self) -> torch.device:
        return self.model.dict.weight.device

    def _check(self, units: Sequence[int]) -> list[int]:
        units = [int(u) for u in units]
        n = self.model.cfg.num_embeddings
        bad = [u for u in units if not 0 <= u < n]
        if bad:
            raise InvalidUnitsError(f"unit id {bad[0]} is out of range: this vocoder knows units 0..{n - 1}")
        return units

    def _expand(self, final: bool) -> None:
        """Move units whose durations are known (or all, with no duration prediction) to the frame list."""
        total = self._units_base + len(self._units)
        if not self.dur_prediction:
            self._frames.extend(self._units)
            self._units_base, self._units, self._units_done = total, [], total
            return
        end = total if final else total - self.dur_context
        if end <= self._units_done:
            return
        start = max(self._units_base, self._units_done - self.dur_context)
        window = torch.tensor([self._units[start - self._units_base:]], device=self.device)  # (1, W)
        dur = self.model.predict_durations(window)[0]  # (W,)
        lo, hi = self._units_done - start, end - start
        self._frames.extend(torch.repeat_interleave(window[0, lo:hi], dur[lo:hi]).tolist())
        self._units_done = end
        keep = max(self._units_base, end - self.dur_context)
        self._units = self._units[keep - self._units_base:]
        self._units_base = keep

    def _vocode(self, final: bool) -> Tensor:
        """Vocode the frames that have enough look-ahead (all of them if ``final``); (S,) samples."""
        total = self._frames_base + len(self._frames)
        end = total if final else total - self.right
        if end <= self._frames_done or (not final and end - self._frames_done < self.chunk):
            return torch.zeros(0, device=self.device)
        start = max(self._frames_base, self._frames_done - self.left)
        stop = min(total, end + self.right)
        window = torch.tensor([self._frames[start - self._frames_base:stop - self._frames_base]],
                              device=self.device)  # (1, W)
        hop = self.model.hop_length
        with torch.no_grad():
            wav = self.model.generate(self.model.embed(window, self.spkr))[0]  # (W * hop,)
        out = wav[(self._frames_done - start) * hop:(end - start) * hop]
        self._frames_done = end
        keep = max(self._frames_base, end - self.left)
        self._frames = self._frames[keep - self._frames_base:]
        self._frames_base = keep
        return out

    def push(self, units: Sequence[int]) -> Tensor:
        """Add units; return the (S,) audio that became final (possibly empty)."""
        if self._finished:
            raise RuntimeError("push() after flush(): start a new stream")
        self._units.extend(self._check(units))
        with torch.no_grad():
            self._expand(final=False)
        return self._vocode(final=False)

    def flush(self) -> Tensor:
        """End of the unit stream: return the remaining (S,) audio."""
        if self._finished:
            return torch.zeros(0, device=self.device)
        self._finished = True
        if self._units_base + len(self._units) == 0:
            raise InvalidUnitsError("the unit stream was empty: nothing to vocode")
        with torch.no_grad():
            self._expand(final=True)
        return self._vocode(final=True)

    def stream(self, unit_chunks: Iterable[Sequence[int]]) -> Iterator[Tensor]:
        """Consume an iterable of unit lists; yield non-empty (S_i,) waveform chunks as they become final."""
        for units in unit_chunks:
            out = self.push(units)
            if out.numel():
                yield out
        out = self.flush()
        if out.numel():
            yield out
