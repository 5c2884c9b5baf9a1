"""Parity: the LLM plugins give transformers' logits for the same weights, with and without the KV cache."""

from __future__ import annotations

import pytest
import torch

from lyra_sdk.interfaces import ChatMessage, ComponentKind

TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128, "vocab_size": 151936, "max_position_embeddings": 2048}
FAMILIES = {
    "qwen2": dict(TINY, tie_word_embeddings=True),
    "llama": dict(TINY, tie_word_embeddings=True, rope_theta=500000.0,
                  rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 256}),
}


@pytest.fixture(scope="module")
def host():
    from lyra_sdk.plugins import get_plugin_host

    return get_plugin_host()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_logits_equal_transformers(family, host):
    torch.manual_seed(0)
    llm = host.build(ComponentKind.LLM, family, {"tokenizer": "qwen2", "config": FAMILIES[family]}).eval()
    ref = type(llm.model)(llm.model.config).eval()
    ref.load_state_dict(llm.model.state_dict())
    ids = torch.randint(0, 151000, (2, 11))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding in row 1
    pos = llm.position_ids(mask)
    with torch.no_grad():
        ours = llm(llm.embed_tokens(ids), mask, position_ids=pos).logits
        theirs = ref(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
        # prefill 8 tokens, then 3 cached steps == one full pass
        out = llm(llm.embed_tokens(ids[:, :8]), mask[:, :8], position_ids=pos[:, :8], use_cache=True)
        steps = []
        cache = out.past_key_values
        for t in range(8, 11):
            o = llm(llm.embed_tokens(ids[:, t : t + 1]), mask[:, : t + 1], position_ids=pos[:, t : t + 1],
                    past_key_values=cache, use_cache=True)
            cache = o.past_key_values
            steps.append(o.logits)
        torch.testing.assert_close(torch.cat(steps, 1)[0], theirs[0, 8:], rtol=0, atol=1e-4)


def test_llama32_rope_scaling_and_tied_embeddings(host):
    llm = host.build(ComponentKind.LLM, "llama", {"tokenizer": "qwen2", "config": FAMILIES["llama"]})
    assert llm.model.config.rope_parameters["rope_type"] == "llama3"
    assert llm.model.lm_head.weight.data_ptr() == llm.model.model.embed_tokens.weight.data_ptr()


def test_loads_hf_folder_and_chat_template(host, tmp_path):
    torch.manual_seed(1)
    llm = host.build(ComponentKind.LLM, "qwen2", {"tokenizer": "qwen2", "config": FAMILIES["qwen2"]})
    llm.model.save_pretrained(tmp_path / "m")
    llm.hf_tokenizer.save_pretrained(tmp_path / "m")
    again = host.build(ComponentKind.LLM, "qwen2", {"path": str(tmp_path / "m")})
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        a = llm(llm.embed_tokens(ids), torch.ones_like(ids)).logits
        b = again(again.embed_tokens(ids), torch.ones_like(ids)).logits
    assert torch.equal(a, b)
    text = again.format_chat([ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", "hi")])
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                    "<|im_start|>assistant\n")
    # Qwen2 ids, as REFERENCE section 1 lists them
    tok = again.tokenizer
    assert tok.encode("<|endoftext|><|im_start|><|im_end|><|vision_start|><|vision_end|><|image_pad|>") == [
        151643, 151644, 151645, 151652, 151653, 151655]
    assert 151645 in tok.eos_token_ids


def test_wrong_family_folder_is_refused(host, tmp_path):
    from lyra_sdk.errors import CheckpointError

    llm = host.build(ComponentKind.LLM, "qwen2", {"tokenizer": "qwen2", "config": FAMILIES["qwen2"]})
    llm.model.save_pretrained(tmp_path / "m")
    with pytest.raises(CheckpointError, match="holds a 'qwen2' model"):
        host.build(ComponentKind.LLM, "llama", {"path": str(tmp_path / "m"), "tokenizer": "qwen2"})
    with pytest.raises(CheckpointError, match="not found"):
        host.build(ComponentKind.LLM, "llama", {"path": str(tmp_path / "missing"), "tokenizer": "qwen2"})
