"""Qwen2-VL for the Lyra SDK: the ``qwen2-vl-vision`` image/video encoder and the ``qwen2-vl`` M-RoPE LLM."""
