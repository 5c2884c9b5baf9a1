"""Typed interfaces of every component kind. Plugins subclass these."""

from .base import ComponentKind, Configurable, Modality, PluginOptions
from .encoder import Encoder, Features, MediaEmbeddings, Projector
from .llm import ChatMessage, LLMBackbone, LLMOutput, MediaSpan, Tokenizer
from .routing import LatentExtractor, LoraRouter, RoutingInput
from .speech import SpeechDecoder, UnitStream, Vocoder

KIND_BASES: dict[ComponentKind, type] = {
    ComponentKind.ENCODER: Encoder,
    ComponentKind.PROJECTOR: Projector,
    ComponentKind.LLM: LLMBackbone,
    ComponentKind.LORA_ROUTER: LoraRouter,
    ComponentKind.EXTRACTOR: LatentExtractor,
    ComponentKind.SPEECH_DECODER: SpeechDecoder,
    ComponentKind.VOCODER: Vocoder,
}
"""The base class a component of each kind must derive from."""

__all__ = [
    "ChatMessage", "ComponentKind", "Configurable", "Encoder", "Features", "KIND_BASES", "LLMBackbone",
    "LLMOutput", "LatentExtractor", "LoraRouter", "MediaEmbeddings", "MediaSpan", "Modality", "PluginOptions", "Projector",
    "RoutingInput", "SpeechDecoder", "Tokenizer", "UnitStream", "Vocoder",
]
