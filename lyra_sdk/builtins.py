"""The core's own plugins (projectors), registered through the ``lyra_sdk`` entry point like any other."""

from __future__ import annotations

from .hookspecs import Register, hookimpl


@hookimpl
def register_projectors(register: Register) -> None:
    """Lyra's speech projector and the generic image projectors."""
    from .projectors import IdentityProjector, MlpGeluProjector, SimpleMlpProjector

    register("simple_mlp", SimpleMlpProjector)
    register("identity", IdentityProjector)
    register("mlp2x_gelu", MlpGeluProjector)


@hookimpl
def register_speech_decoders(register: Register) -> None:
    """Lyra's CTC speech-unit generator."""
    from .ctc import CtcSpeechDecoder

    register("ctc", CtcSpeechDecoder)


@hookimpl
def register_lora_routers(register: Register) -> None:
    """Lyra's default LoRA router: no speech -> adapters off, one clip -> speech, more -> long_speech."""
    from .mechanisms.routing import DefaultRouter

    register("default", DefaultRouter)


@hookimpl
def register_extractors(register: Register) -> None:
    """Lyra's LMME top-k extractor."""
    from .mechanisms.extraction import TopKExtractor

    register("topk", TopKExtractor)
