"""Entry point of the ``lyra-qwen2-vl`` plugin package."""

from __future__ import annotations

from lyra_sdk.hookspecs import Register, hookimpl


@hookimpl
def register_encoders(register: Register) -> None:
    """Register the Qwen2-VL vision tower as ``qwen2-vl-vision``."""
    from .vision import Qwen2VLVisionEncoder

    register("qwen2-vl-vision", Qwen2VLVisionEncoder)


@hookimpl
def register_llms(register: Register) -> None:
    """Register Qwen2-VL's language model as ``qwen2-vl``."""
    from .llm import Qwen2VLLLM

    register("qwen2-vl", Qwen2VLLLM)
