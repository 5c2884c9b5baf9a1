"""Causal LMs from transformers (Qwen2, Llama 3.x) as :class:`lyra_sdk.interfaces.LLMBackbone` components."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import torch
from pydantic import Field
from torch import Tensor

from lyra_sdk.errors import CheckpointError, ConfigError
from lyra_sdk.interfaces import ChatMessage, LLMBackbone, LLMOutput, PluginOptions
from lyra_sdk.loading import quiet_hf_loading
from lyra_sdk.paths import resolve_path

from .tokenizers import HFTokenizer, load_tokenizer

log = logging.getLogger(__name__)


class HFLLMOptions(PluginOptions):
    """Options shared by the transformers-backed LLM plugins.

    Give ``path`` (an HF-format folder, optionally with ``gguf_file``) to load real weights, or ``config``
    (the transformers config fields) to build the architecture with random weights.
    """

    path: str | None = Field(None, description="HF-format model folder (config.json + safetensors) or GGUF folder")
    gguf_file: str | None = Field(None, description="GGUF file name inside `path`, dequantized on load")
    gguf_cache: bool = Field(True, description="convert a GGUF once into an HF-format copy in the SDK cache")
    config: dict[str, Any] | None = Field(None, description="transformers config fields for a randomly initialised model")
    tokenizer: str | None = Field(None, description="'qwen2' (built in), a tokenizer folder, or unset = `path`")
    chat_template: str | None = Field(None, description="Jinja chat template overriding the tokenizer's")
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"


class HFCausalLM(LLMBackbone):
    """A transformers ``*ForCausalLM`` driven through input embeddings.

    Subclasses set ``model_types`` (accepted ``config.model_type`` values) and implement ``hf_classes``.
    """

    Options = HFLLMOptions
    model_types: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def hf_classes(cls) -> tuple[Any, Any]:
        """(transformers config class, transformers ``*ForCausalLM`` class), imported lazily."""
        raise NotImplementedError

    def __init__(self, model: Any, tokenizer: Any, options: HFLLMOptions) -> None:
        super().__init__()
        self.model = model  # the transformers *ForCausalLM
        self.options = options
        self.hf_tokenizer = tokenizer
        if options.chat_template is not None:
            tokenizer.chat_template = options.chat_template
        extra_eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        extra = extra_eos if isinstance(extra_eos, list) else ([extra_eos] if extra_eos is not None else [])
        self.tokenizer = HFTokenizer(tokenizer, extra)
        self.hidden_size = int(model.config.hidden_size)
        self.vocab_size = int(model.config.vocab_size)
        self.max_context = getattr(model.config, "max_position_embeddings", None)

    @classmethod
    def from_options(cls, options: HFLLMOptions) -> Self:
        """Load from ``path`` or build from ``config`` with random weights."""
        if options.path is None and options.config is None:
            raise ConfigError([("llm.options", "set either path (a model folder) or config (for random weights)")])
        tok_source, tok_gguf = options.path, options.gguf_file
        on_meta = torch.get_default_device().type == "meta"  # shapes only (lyra info): no conversion, no weights
        if options.path is not None and options.gguf_file is not None and options.gguf_cache and not on_meta:
            folder = cls._gguf_cached(options)
            model = cls._load(options.model_copy(update={"path": str(folder), "gguf_file": None}))
            tok_source, tok_gguf = str(folder), None
        elif options.path is not None:
            model = cls._load(options)
        else:
            try:
                hf_config = cls.hf_classes()[0](**options.config)
            except Exception as exc:  # transformers validates config fields with several exception types
                raise ConfigError([("llm.options.config", f"{type(exc).__name__}: {exc}")]) from None
            hf_config._attn_implementation = options.attn_implementation
            model = cls.hf_classes()[1](hf_config)
        tokenizer = load_tokenizer(options.tokenizer, tok_source, tok_gguf)
        return cls(model, tokenizer, options)

    @classmethod
    def _gguf_cached(cls, options: HFLLMOptions) -> Path:
        """An HF-format copy of a GGUF model in the SDK cache, made once (dequantizing GGUF takes a while)."""
        import os
        import shutil
        import tempfile

        from lyra_sdk.paths import cache_dir

        src = resolve_path(options.path) / options.gguf_file
        if not src.is_file():
            raise CheckpointError(f"GGUF file not found: {src}")
        st = src.stat()
        folder = cache_dir() / "gguf" / f"{src.stem}-{st.st_size}-{int(st.st_mtime)}"
        if (folder / "config.json").exists():
            return folder
        log.warning("converting %s to an HF-format copy in %s (once; later loads are fast)", src.name, folder)
        model = cls._load(options)
        tokenizer = load_tokenizer(options.tokenizer if options.tokenizer else None, options.path, options.gguf_file)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".convert-"))
        try:
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            os.replace(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (folder / "config.json").exists():
                raise
        return folder

    @classmethod
    def _load(cls, options: HFLLMOptions) -> Any:
        from transformers import AutoConfig

        folder = resolve_path(options.path)
        if not folder.is_dir():
            raise CheckpointError(f"LLM folder not found: {folder}")
        kwargs: dict[str, Any] = {"attn_implementation": options.attn_implementation}
        if options.gguf_file is not None:
            if not (folder / options.gguf_file).exists():
                raise CheckpointError(f"GGUF file not found: {folder / options.gguf_file}")
            kwargs["gguf_file"] = options.gguf_file
        try:
            hf_config = AutoConfig.from_pretrained(str(folder), **({"gguf_file": options.gguf_file} if options.gguf_file else {}))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read the model config in {folder}: {exc}") from None
        if hf_config.model_type not in cls.model_types:
            raise CheckpointError(
                f"{folder} holds a {hf_config.model_type!r} model; this plugin loads {', '.join(cls.model_types)}"
            )
        if torch.get_default_device().type == "meta":
            hf_config._attn_implementation = options.attn_implementation
            return cls.hf_classes()[1](hf_config)  # the architecture only, e.g. for parameter counts
        log.info("loading %s weights from %s", hf_config.model_type, folder)
        try:
            with quiet_hf_loading():
                model = cls.hf_classes()[1].from_pretrained(str(folder), **kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot load weights from {folder}: {exc}") from None
        model.hf_quantizer = None  # GGUF weights are dequantized: a plain model from here on
        return model

    def saved_options(self) -> HFLLMOptions:
        """Architecture-only options (the transformers config inline), tokenizer kept as given."""
        cfg = self.model.config.to_dict()
        for k in ("_name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype", "quantization_config"):
            cfg.pop(k, None)
        return self.options.model_copy(update={"path": None, "gguf_file": None, "config": cfg})

    def export(self, directory: Path) -> HFLLMOptions:
        """Options for a saved model; a tokenizer that came from a folder is copied to ``directory/tokenizer``."""
        opts = self.saved_options()
        if self.options.tokenizer != "qwen2":
            self.hf_tokenizer.save_pretrained(str(directory / "tokenizer"))
            opts = opts.model_copy(update={"tokenizer": "tokenizer"})
        return opts

    # ---------------------------------------------------------------- LLMBackbone

    def embed_tokens(self, input_ids: Tensor) -> Tensor:
        """(B, L) -> (B, L, D)."""
        return self.model.get_input_embeddings()(input_ids)

    def input_embeddings(self) -> Tensor:
        """The embedding matrix itself, (V, D)."""
        return self.model.get_input_embeddings().weight

    def forward(self, inputs_embeds: Tensor, attention_mask: Tensor, position_ids: Tensor | None = None,
                past_key_values: Any | None = None, use_cache: bool = False, logits_to_keep: int = 0,
                return_logits: bool = True) -> LLMOutput:
        """Decoder forward on embeddings; logits for the last ``logits_to_keep`` positions (all when 0)."""
        if use_cache and past_key_values is None:
            from transformers import DynamicCache

            past_key_values = DynamicCache(config=self.model.config)
        out = self.model.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                               past_key_values=past_key_values, use_cache=use_cache)
        hidden = out.last_hidden_state  # (B, L, D)
        logits = None
        if return_logits:
            h = hidden[:, -logits_to_keep:] if logits_to_keep > 0 else hidden
            logits = self.model.lm_head(h)
        return LLMOutput(logits=logits, hidden_states=hidden, past_key_values=out.past_key_values if use_cache else None)

    def logits(self, hidden_states: Tensor) -> Tensor:
        """The LM head on (..., D) hidden states."""
        return self.model.lm_head(hidden_states)

    def format_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        """Render with the tokenizer's chat template (placeholders stay as text)."""
        if not getattr(self.hf_tokenizer, "chat_template", None):
            raise ConfigError([("llm.options.chat_template", "the tokenizer has no chat template: set chat_template")])
        msgs = [{"role": m.role, "content": m.content} for m in messages]
        return self.hf_tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)

    def decoder_layers(self) -> torch.nn.ModuleList:
        """The transformer blocks, in order (for mechanisms that drive the layers themselves)."""
        return self.model.model.layers


class Qwen2LLM(HFCausalLM):
    """Qwen2 / Qwen2.5 language models (``Qwen2ForCausalLM``)."""

    model_types = ("qwen2",)

    @classmethod
    def hf_classes(cls) -> tuple[Any, Any]:
        """Qwen2Config, Qwen2ForCausalLM."""
        from transformers import Qwen2Config, Qwen2ForCausalLM

        return Qwen2Config, Qwen2ForCausalLM


class LlamaLLM(HFCausalLM):
    """Llama-family models (Llama 2/3.x, SmolLM2, ...; ``LlamaForCausalLM``), including GGUF files."""

    model_types = ("llama",)

    @classmethod
    def hf_classes(cls) -> tuple[Any, Any]:
        """LlamaConfig, LlamaForCausalLM."""
        from transformers import LlamaConfig, LlamaForCausalLM

        return LlamaConfig, LlamaForCausalLM
