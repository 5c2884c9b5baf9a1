"""Qwen2 and Llama-family LLM backbones for the Lyra SDK, on top of transformers."""
