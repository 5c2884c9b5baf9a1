"""Entry point of the ``lyra-hf-llms`` plugin package."""

from __future__ import annotations

from lyra_sdk.hookspecs import Register, hookimpl


@hookimpl
def register_llms(register: Register) -> None:
    """Register the ``qwen2`` and ``llama`` backbones."""
    from .backbone import LlamaLLM, Qwen2LLM

    register("qwen2", Qwen2LLM)
    register("llama", LlamaLLM)
