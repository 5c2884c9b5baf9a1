"""Generation: greedy parity with transformers' generate, batching, seeded sampling, stop ids."""

from __future__ import annotations

import pytest
import torch

from lyra_sdk import GenerationOptions, Lyra
from lyra_sdk.generation import sample_next
from lyra_sdk.interfaces import ChatMessage
from lyra_sdk.prompt import Prompt


def _reference(model: Lyra):
    """A separate transformers model with the same weights."""
    hf = model.llm.model
    ref = type(hf)(hf.config)
    ref.load_state_dict(hf.state_dict())
    return ref.eval()


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_greedy_equals_transformers_generate(family, host, tiny_config):
    cfg = tiny_config()
    cfg["llm"]["plugin"] = family
    if family == "llama":
        cfg["llm"]["options"]["config"].update(rope_theta=500000.0, tie_word_embeddings=False)
    model = Lyra.from_config(cfg, host=host)
    ref = _reference(model)
    tok = model.llm.tokenizer
    for text in ["Hello, who are you?", "Count: one two three"]:
        ids_ours = model.generate_ids([text], max_new_tokens=12)[1][0]
        rendered = model.llm.format_chat([ChatMessage("system", model.config.system_prompt),
                                          ChatMessage("user", text)])
        input_ids = torch.tensor([tok.encode(rendered)])
        out = ref.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=12, do_sample=False,
                           eos_token_id=tok.eos_token_ids, pad_token_id=tok.pad_token_id)
        ref_ids = out[0, input_ids.shape[1]:].tolist()
        cut = next((i for i, t in enumerate(ref_ids) if t in tok.eos_token_ids), len(ref_ids))
        assert ids_ours == ref_ids[:cut]


def test_batch_equals_one_by_one(text_model):
    prompts = ["short", "a much longer prompt with many more words in it than the other"]
    batched = text_model.generate_ids(prompts, max_new_tokens=8)[1]
    single = [text_model.generate_ids([p], max_new_tokens=8)[1][0] for p in prompts]
    assert batched == single


def test_seeded_sampling_is_reproducible(text_model):
    a = text_model.generate(["hi", "yo"], temperature=0.9, top_p=0.9, seed=3, max_new_tokens=6)
    b = text_model.generate(["hi", "yo"], temperature=0.9, top_p=0.9, seed=3, max_new_tokens=6)
    c = text_model.generate(["hi", "yo"], temperature=0.9, top_p=0.9, seed=4, max_new_tokens=6)
    assert a == b and a != c


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    opts = GenerationOptions(temperature=1.0, top_p=0.7)
    g = torch.Generator().manual_seed(0)
    seen = {int(sample_next(logits, opts, g)) for _ in range(200)}
    assert seen == {0, 1}


def test_stop_ids_and_max_new_tokens(text_model):
    _, ids = text_model.generate_ids(["hello"], max_new_tokens=5)
    assert len(ids[0]) <= 5
    full = text_model.generate_ids(["hello"], max_new_tokens=5, temperature=0.0)[1][0]
    if len(full) >= 2:
        stopped = text_model.generate_ids(["hello"], max_new_tokens=5, stop_ids=[full[1]])[1][0]
        assert stopped == full[: full.index(full[1])]


def test_prompt_objects_and_system_override(text_model):
    a = text_model.generate([Prompt("hi", system=None)], max_new_tokens=4)
    b = text_model.generate([Prompt("hi")], max_new_tokens=4)
    assert isinstance(a[0], str) and isinstance(b[0], str)


def test_prompt_longer_than_the_context_is_refused(text_model):
    from lyra_sdk import LyraError

    limit = text_model.llm.max_context
    assert limit == 4096
    with pytest.raises(LyraError, match=r"more than the LLM's context of 4096 tokens"):
        text_model.generate("word " * 4200, max_new_tokens=4)
    with pytest.raises(LyraError, match="context"):  # room for the answer counts too
        text_model.generate("word " * 4050, max_new_tokens=100)
