"""Lyra's default LoRA router: no speech -> adapters off, one short clip -> ``speech``, more -> ``long_speech``."""

from __future__ import annotations

from typing import Self

from pydantic import Field

from ..interfaces import LoraRouter, Modality, PluginOptions, RoutingInput


class DefaultRouter(LoraRouter):
    """Routes by the amount of speech in a sample, as in the Lyra paper.

    - no speech: ``None`` (adapters off, the base LLM keeps its text/image/video quality);
    - one speech clip that fits in one encoder window (``speech_chunks <= 1``): ``speech_route``;
    - several windows or several clips: ``long_speech_route``.

    A chosen route that is not in ``available`` falls back: long speech -> speech -> None.
    """

    class Options(PluginOptions):
        """Options of the ``default`` router."""

        speech_route: str = Field("speech", description="route for one clip of at most one window")
        long_speech_route: str = Field("long_speech", description="route for several windows or clips")
        available: list[str] = Field(default_factory=list,
                                     description="configured adapter names (filled in by Lyra from lora.adapters)")

    def __init__(self, options: Options) -> None:
        self.options = options

    @classmethod
    def from_options(cls, options: Options) -> Self:
        """Build from validated options."""
        return cls(options)

    def route(self, sample: RoutingInput) -> str | None:
        """The route for one sample (see the class docstring), or None for the plain base model."""
        clips = int(sample.media_counts.get(Modality.SPEECH, 0))
        windows = int(sample.speech_chunks)
        if clips <= 0 and windows <= 0:
            return None
        opts = self.options
        if clips <= 1 and windows <= 1:
            candidates = [opts.speech_route]
        else:
            candidates = [opts.long_speech_route, opts.speech_route]
        return next((c for c in candidates if c in opts.available), None)


__all__ = ["DefaultRouter"]
