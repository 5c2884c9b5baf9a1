"""The ``qwen2-vl`` LLM backbone: Qwen2-VL's language model with M-RoPE positions for image and video tokens.

Only the language half of ``Qwen2VLForConditionalGeneration`` is built (its ``Qwen2VLTextModel`` and
``lm_head``); the vision tower is the ``qwen2-vl-vision`` encoder. Positions are (3, B, L): text and speech
tokens carry the same value on the temporal, height and width axes; a media span with a (t, h, w) token grid
gets positions ``start + (i_t, i_h, i_w)``, and the text after it starts at ``start + max(h, w)``, exactly as
transformers' ``Qwen2VLModel.get_rope_index`` does in the installed version.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Self

import torch
from torch import Tensor, nn

from lyra_hf_llms.backbone import HFCausalLM, HFLLMOptions
from lyra_hf_llms.tokenizers import load_tokenizer
from lyra_sdk.errors import CheckpointError, ConfigError, LyraError
from lyra_sdk.interfaces import LLMOutput, MediaSpan, Modality
from lyra_sdk.paths import resolve_path

from lyra_sdk.weights import load_strict

from .checkpoint import read_config, read_tensors

log = logging.getLogger(__name__)

VISION_WRAP = ("<|vision_start|>", "<|vision_end|>")
_TEXT_PARTS = ("embed_tokens.", "layers.", "norm.")
_DROP = ("transformers_version", "model_type", "dtype", "torch_dtype", "architectures", "_name_or_path",
         "layer_types", "quantization_config")


def text_key(key: str) -> str | None:
    """Checkpoint key -> key of :class:`Qwen2VLTextLM`; None for keys of other parts (vision, speech, ...)."""
    if key == "lm_head.weight":
        return key
    for prefix in ("model.language_model.", "model."):
        if key.startswith(prefix):
            rest = key[len(prefix):]
            return "model." + rest if rest.startswith(_TEXT_PARTS) else None
    return None


class Qwen2VLTextLM(nn.Module):
    """Qwen2-VL's language model: ``model`` (a ``Qwen2VLTextModel``) and ``lm_head``, tied when the config says so.

    ``config`` is the text config (hidden_size, vocab_size, ...); ``full_config`` the whole ``Qwen2VLConfig``.
    """

    def __init__(self, config: Any) -> None:
        super().__init__()
        from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLTextModel

        text = config.text_config
        text._attn_implementation = getattr(config, "_attn_implementation", None) or "sdpa"
        self.full_config = config
        self.config = text
        self.generation_config = None
        self.model = Qwen2VLTextModel(text)
        self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        nn.init.normal_(self.lm_head.weight, std=text.initializer_range)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding table."""
        return self.model.embed_tokens


class Qwen2VLLLM(HFCausalLM):
    """Qwen2-VL's language model (2B / 7B / 72B) as a Lyra backbone, with M-RoPE.

    ``config`` holds ``Qwen2VLConfig`` fields (flat, as in a hub config.json, or with ``text_config``);
    ``path`` an HF Qwen2-VL folder (or an original Lyra folder): only its language-model weights are read.
    """

    Options = HFLLMOptions
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_vl",)
    media_wrappers: ClassVar[dict[Modality, tuple[str, str]]] = {Modality.IMAGE: VISION_WRAP,
                                                                  Modality.VIDEO: VISION_WRAP}

    @classmethod
    def hf_classes(cls) -> tuple[Any, Any]:
        """Qwen2VLConfig, :class:`Qwen2VLTextLM`."""
        from transformers import Qwen2VLConfig

        return Qwen2VLConfig, Qwen2VLTextLM

    @classmethod
    def _hf_config(cls, fields: dict[str, Any], where: str, attn: str) -> Any:
        fields = {k: v for k, v in fields.items() if k not in ("model_type", "architectures")}
        try:
            config = cls.hf_classes()[0](**fields)
        except Exception as exc:  # transformers validates config fields with several exception types
            raise ConfigError([(where, f"{type(exc).__name__}: {exc}")]) from None
        config._attn_implementation = attn
        return config

    @classmethod
    def from_options(cls, options: HFLLMOptions) -> Self:
        """Build from ``config`` (random weights) or load the language model of the folder at ``path``."""
        if (options.path is None) == (options.config is None):
            raise ConfigError([("llm.options", "set exactly one of path (a Qwen2-VL folder) or config "
                                               "(Qwen2VLConfig fields, for random weights)")])
        if options.gguf_file is not None:
            raise ConfigError([("llm.options.gguf_file", "qwen2-vl does not read GGUF files")])
        if options.config is not None:
            model = Qwen2VLTextLM(cls._hf_config(options.config, "llm.options.config", options.attn_implementation))
        else:
            model = cls._load(options)
        tokenizer = load_tokenizer(options.tokenizer, options.path)
        return cls(model, tokenizer, options)

    @classmethod
    def _load(cls, options: HFLLMOptions) -> Qwen2VLTextLM:
        folder = resolve_path(options.path)
        log.info("qwen2-vl: loading the language model of %s", folder)
        data = read_config(folder)
        kind = str(data.get("model_type", ""))
        if kind not in cls.model_types and not kind.startswith("Lyra_Qwen2VL"):
            raise CheckpointError(f"{folder} holds a {kind!r} model; this plugin loads qwen2_vl "
                                  f"(and original Lyra_Qwen2VL*) folders")
        model = Qwen2VLTextLM(cls._hf_config(data, f"{folder}/config.json", options.attn_implementation))
        tensors = read_tensors(folder, text_key)
        tied = frozenset({"lm_head.weight"}) if model.full_config.tie_word_embeddings else frozenset()
        if tied:
            tensors.pop("lm_head.weight", None)  # the tied head is the embedding table
        load_strict(model, tensors, f"{folder} (language model)", optional=tied)
        if (folder / "generation_config.json").exists():
            from transformers import GenerationConfig

            model.generation_config = GenerationConfig.from_pretrained(str(folder))
        return model

    def saved_options(self) -> HFLLMOptions:
        """Architecture-only options: the Qwen2VLConfig (text part and token ids) inline."""
        full = self.model.full_config
        text = {k: v for k, v in full.text_config.to_dict().items() if k not in _DROP}
        cfg = {"text_config": text, "tie_word_embeddings": bool(full.tie_word_embeddings)}
        for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
            cfg[key] = getattr(full, key)
        return self.options.model_copy(update={"path": None, "gguf_file": None, "config": cfg})

    # ---------------------------------------------------------------- LLMBackbone

    def forward(self, inputs_embeds: Tensor, attention_mask: Tensor, position_ids: Tensor | None = None,
                past_key_values: Any | None = None, use_cache: bool = False, logits_to_keep: int = 0,
                return_logits: bool = True) -> LLMOutput:
        """Decoder forward with (3, B, L) positions; (B, L) positions are broadcast to the three axes."""
        length = inputs_embeds.shape[1]
        if position_ids is None:
            position_ids = super().position_ids(attention_mask)[:, -length:]
        if position_ids.ndim == 2:
            position_ids = position_ids[None].expand(3, -1, -1)  # (3, B, L)
        return super().forward(inputs_embeds, attention_mask, position_ids, past_key_values, use_cache,
                               logits_to_keep, return_logits)

    def position_ids(self, attention_mask: Tensor, spans: Sequence[Sequence[MediaSpan]] | None = None) -> Tensor:
        """M-RoPE positions (3, B, L) for a left- or right-padded batch; padding positions are 0."""
        bsz, length = attention_mask.shape
        out = torch.zeros(3, bsz, length, dtype=torch.long, device=attention_mask.device)
        real = attention_mask.bool()
        rank = real.long().cumsum(-1) - 1  # (B, L): index of each token among its row's real tokens
        for b in range(bsz):
            n_real = int(real[b].sum())
            row = torch.empty(3, n_real, dtype=torch.long)
            done = cur = 0  # real tokens placed so far, next free position
            media = [s for s in (spans[b] if spans is not None else []) if s.grid is not None]
            for span in sorted(media, key=lambda s: s.start):
                first = int(rank[b, span.start])
                t, h, w = (int(x) for x in span.grid.tolist())
                if t * h * w != span.length:
                    raise LyraError(f"sample {b}: {span.modality.value} span of {span.length} tokens does not "
                                    f"match its grid {t}x{h}x{w}")
                row[:, done:first] = torch.arange(first - done) + cur  # text before the span
                cur += first - done
                grid = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w),
                                                  indexing="ij")).reshape(3, -1)  # (3, t*h*w)
                row[:, first:first + span.length] = grid + cur
                cur += max(h, w)  # where the next text starts (transformers' get_rope_index)
                done = first + span.length
            row[:, done:] = torch.arange(n_real - done) + cur
            out[:, b, real[b]] = row.to(out.device)
        return out
