"""LMME: parity with the plain HF forward at keep=1, the dropped tokens are the least attended (checked against
eager attention weights), cached decoding, batching, per-layer cache lengths, M-RoPE, selection and options."""

from __future__ import annotations

import pydantic
import pytest
import torch
from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM

from lyra_sdk.errors import LyraError
from lyra_sdk.mechanisms.extraction import (ExtractionOptions, LayerwiseLM, TopKExtractor, extract_decode_step,
                                            extract_forward, gather_kept, layer_groups)

D = 64
ATOL = 1e-5


def tiny_qwen2(layers: int = 4, attn: str = "sdpa", seed: int = 0) -> Qwen2ForCausalLM:
    """A tiny random Qwen2 (hidden 64, 4 heads, 2 KV heads, vocab 1000), fp32, eval mode."""
    torch.manual_seed(seed)
    cfg = Qwen2Config(hidden_size=D, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=128, vocab_size=1000, max_position_embeddings=4096)
    cfg._attn_implementation = attn
    return Qwen2ForCausalLM(cfg).eval()


def sample(n_before: int, n_media: int, n_after: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One unpadded sample: (L, D) embeddings and a (L,) media mask with one media block."""
    gen = torch.Generator().manual_seed(seed)
    length = n_before + n_media + n_after
    emb = torch.randn(length, D, generator=gen)
    media = torch.zeros(length, dtype=torch.bool)
    media[n_before:n_before + n_media] = True
    return emb, media


def left_pad(rows: list[tuple[torch.Tensor, torch.Tensor]]):
    """Left-pad samples -> embeds (B, L, D), attention mask (B, L), positions (B, L), media mask (B, L)."""
    length = max(e.shape[0] for e, _ in rows)
    emb = torch.zeros(len(rows), length, D)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    media = torch.zeros(len(rows), length, dtype=torch.bool)
    for b, (e, m) in enumerate(rows):
        emb[b, length - e.shape[0]:] = e
        mask[b, length - e.shape[0]:] = 1
        media[b, length - e.shape[0]:] = m
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return emb, mask, pos, media


def test_options_and_groups():
    with pytest.raises(pydantic.ValidationError):
        ExtractionOptions(keep=0.0)
    with pytest.raises(pydantic.ValidationError):
        ExtractionOptions(keep=1.5)
    with pytest.raises(pydantic.ValidationError):
        ExtractionOptions(gap=0)
    with pytest.raises(pydantic.ValidationError):
        ExtractionOptions(keep=0.5, unknown=1)
    assert layer_groups(28, 7) == [(0, 7), (7, 14), (14, 21), (21, 28)]
    assert layer_groups(4, 2) == [(0, 2), (2, 4)]
    assert layer_groups(4, 4) == [(0, 4)]  # never after the last layer
    assert layer_groups(5, 2) == [(0, 2), (2, 4), (4, 5)]


def test_topk_select():
    ext = TopKExtractor(ExtractionOptions(keep=0.5, gap=2, min_keep=2))
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.2, 0.8, 0.0], [0.0, 0.3, 0.3, 0.1, 0.0, 0.0, 0.0]])
    media = torch.tensor([[0, 1, 1, 1, 1, 1, 0], [0, 1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    keep = ext.select(scores, media)
    # row 0: 5 media, ceil(2.5) = 3 kept: 0.8, 0.5, 0.3; row 1: 3 media, max(2, 2) = 2 kept: the tie goes to the earlier
    assert keep.tolist() == [[True, False, True, True, False, True, True], [True, True, True, False, True, True, True]]
    assert ext.budget(torch.tensor([0, 1, 10, 100])).tolist() == [0, 1, 5, 50]
    assert TopKExtractor(ExtractionOptions(keep=0.7, min_keep=0)).budget(torch.tensor([100, 10])).tolist() == [70, 7]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_keep_one_equals_plain_forward(attn):
    model = tiny_qwen2(attn=attn)
    emb, mask, pos, media = left_pad([sample(3, 20, 5, 1), sample(2, 9, 4, 2)])
    with torch.no_grad():
        ref = model(inputs_embeds=emb, attention_mask=mask, position_ids=pos).logits
        res = extract_forward(model, emb, mask, pos, media, ExtractionOptions(keep=1.0, gap=2))
        logits = model.lm_head(res.hidden)
    assert res.kept.shape == mask.shape
    valid = mask.bool()
    torch.testing.assert_close(logits[valid], ref[valid], atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(res.logits_last, ref[:, -1], atol=ATOL, rtol=ATOL)


def eager_scores(model, emb, media, layer):
    """Independent scores from HF eager attention weights: layer's attention rows of the text queries, averaged."""
    eager = tiny_qwen2(layers=model.config.num_hidden_layers, attn="eager")
    eager.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = eager(inputs_embeds=emb[None], output_attentions=True)
    att = out.attentions[layer][0].mean(dim=0)  # (L, L)
    queries = ~media & (media.long().cumsum(0) > 0)
    return att[queries].mean(dim=0)  # (L,)


def test_dropped_tokens_are_least_attended():
    model = tiny_qwen2(layers=4)
    emb, media = sample(4, 40, 6, 3)
    opts = ExtractionOptions(keep=0.5, gap=2, min_keep=1)
    with torch.no_grad():
        res = extract_forward(model, emb[None], torch.ones(1, emb.shape[0], dtype=torch.long),
                              torch.arange(emb.shape[0])[None], media[None], opts)
    scores = eager_scores(model, emb, media, layer=1)  # pruned after layer 1
    media_idx = media.nonzero().squeeze(1)
    expected = set(media_idx[scores[media_idx].topk(20).indices].tolist())
    kept = set(res.kept[0].tolist())
    assert kept & set(media_idx.tolist()) == expected
    assert set((~media).nonzero().squeeze(1).tolist()) <= kept  # text is never dropped
    assert res.kept[0].tolist() == sorted(kept)  # order preserved
    assert res.hidden.shape[1] == emb.shape[0] - 20


def greedy_reference(model, emb, steps):
    """Plain greedy decoding without a cache: re-run the whole sequence each step."""
    seq = emb[None]
    out = []
    with torch.no_grad():
        for _ in range(steps):
            tok = model(inputs_embeds=seq).logits[:, -1].argmax(-1)
            out.append(int(tok))
            seq = torch.cat([seq, model.get_input_embeddings()(tok)[:, None]], dim=1)
    return out


def greedy_extract(model, emb, mask, pos, media, opts, steps):
    """Prefill with extract_forward, then greedy steps with extract_decode_step; (B, steps) tokens."""
    cache = DynamicCache()
    toks = []
    with torch.no_grad():
        state = extract_forward(model, emb, mask, pos, media, opts, cache=cache)
        logits = state.logits_last
        nxt = pos.amax(dim=-1, keepdim=True) + 1
        for _ in range(steps):
            tok = logits.argmax(-1)
            toks.append(tok)
            step = extract_decode_step(model, state, model.get_input_embeddings()(tok)[:, None], nxt)
            state, logits, nxt = step.state, step.logits, nxt + 1
    return torch.stack(toks, dim=1), state


def test_generation_keep_one_equals_greedy_and_is_deterministic():
    model = tiny_qwen2(layers=4)
    emb, media = sample(3, 24, 5, 4)
    L = emb.shape[0]
    args = (emb[None], torch.ones(1, L, dtype=torch.long), torch.arange(L)[None], media[None])
    toks, _ = greedy_extract(model, *args, ExtractionOptions(keep=1.0, gap=2), steps=8)
    assert toks[0].tolist() == greedy_reference(model, emb, 8)
    a, _ = greedy_extract(model, *args, ExtractionOptions(keep=0.5, gap=2, min_keep=1), steps=8)
    b, _ = greedy_extract(model, *args, ExtractionOptions(keep=0.5, gap=2, min_keep=1), steps=8)
    assert a.tolist() == b.tolist()


class ReplayExtractor(TopKExtractor):
    """Records its keep masks, then replays them with one extra kept token at the end (a pluggable extractor)."""

    def __init__(self, options):
        super().__init__(options)
        self.masks, self.replay = [], False

    def select(self, scores, media_mask):
        if self.replay:
            m = self.masks.pop(0)
            return torch.cat([m, torch.ones_like(m[:, :1])], dim=1)
        keep = super().select(scores, media_mask)
        self.masks.append(keep)
        return keep


def test_decode_step_equals_full_forward_with_same_selection():
    """Cached decoding after pruning (shorter caches in later layers) equals re-running prompt + token with the
    same tokens dropped at the same layers."""
    model = tiny_qwen2(layers=6)
    emb, media = sample(3, 40, 5, 5)
    L = emb.shape[0]
    ext = ReplayExtractor(ExtractionOptions(keep=0.5, gap=2, min_keep=1))
    cache = DynamicCache()
    with torch.no_grad():
        state = extract_forward(model, emb[None], torch.ones(1, L, dtype=torch.long), torch.arange(L)[None],
                                media[None], ext, cache=cache)
        tok = state.logits_last.argmax(-1)
        new = model.get_input_embeddings()(tok)[:, None]
        step = extract_decode_step(model, state, new, torch.tensor([[L]]))
        ext.replay = True
        emb2 = torch.cat([emb[None], new], dim=1)
        full = extract_forward(model, emb2, torch.ones(1, L + 1, dtype=torch.long), torch.arange(L + 1)[None],
                               torch.cat([media, torch.zeros(1, dtype=torch.bool)])[None], ext)
    assert len(ext.masks) == 0  # both pruning steps replayed
    assert cache.get_seq_length(0) > cache.get_seq_length(2) > cache.get_seq_length(4)
    torch.testing.assert_close(step.logits[0], full.logits_last[0], atol=ATOL, rtol=ATOL)


def test_batch_rows_equal_single_rows():
    model = tiny_qwen2(layers=6)
    rows = [sample(3, 40, 5, 6), sample(2, 12, 7, 7), sample(4, 26, 3, 8)]
    opts = ExtractionOptions(keep=0.5, gap=2, min_keep=4)
    emb, mask, pos, media = left_pad(rows)
    with torch.no_grad():
        batch = extract_forward(model, emb, mask, pos, media, opts)
    btoks, _ = greedy_extract(model, emb, mask, pos, media, opts, steps=5)
    for b, (e, m) in enumerate(rows):
        L = e.shape[0]
        args = (e[None], torch.ones(1, L, dtype=torch.long), torch.arange(L)[None], m[None])
        with torch.no_grad():
            alone = extract_forward(model, *args, opts)
        row_kept = batch.kept[b][batch.kept[b] >= 0]
        off = emb.shape[1] - L  # left padding of row b
        assert (row_kept - off).tolist() == alone.kept[0].tolist()
        torch.testing.assert_close(batch.logits_last[b], alone.logits_last[0], atol=1e-4, rtol=1e-4)
        stoks, _ = greedy_extract(model, *args, opts, steps=5)
        assert btoks[b].tolist() == stoks[0].tolist()


def test_cache_lengths_differ_per_layer():
    model = tiny_qwen2(layers=6)
    emb, media = sample(3, 64, 5, 9)
    L = emb.shape[0]
    opts = ExtractionOptions(keep=0.5, gap=2, min_keep=1)
    _, state = greedy_extract(model, emb[None], torch.ones(1, L, dtype=torch.long), torch.arange(L)[None],
                              media[None], opts, steps=3)
    lens = [state.cache.get_seq_length(i) for i in range(6)]
    # groups (0,2), (2,4), (4,6): 72 -> 40 (32 media) -> 24 (16 media); +3 decoded tokens each
    assert lens == [75, 75, 43, 43, 27, 27]
    assert [kv.shape[1] for kv in state.key_valid] == [75, 43, 27]


def test_training_gradients_and_labels():
    model = tiny_qwen2(layers=4).train()
    emb, mask, pos, media = left_pad([sample(3, 20, 6, 10), sample(2, 10, 5, 11)])
    labels = torch.full(mask.shape, -100)
    labels[:, -4:] = torch.randint(0, 1000, (2, 4))
    res = extract_forward(model, emb, mask, pos, media, ExtractionOptions(keep=0.5, gap=2, min_keep=2))
    lab = gather_kept(labels, res.kept)
    assert torch.equal(lab[:, -4:], labels[:, -4:])  # answer tokens (text) survive, in order
    logits = model.lm_head(res.hidden)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 1000), lab[:, 1:].reshape(-1))
    loss.backward()
    assert model.model.layers[0].self_attn.q_proj.weight.grad is not None
    assert torch.isfinite(loss)


def test_errors():
    model = tiny_qwen2(layers=2)
    emb, mask, pos, media = left_pad([sample(1, 4, 2, 12)])
    with pytest.raises(LyraError):
        extract_forward(model, emb, mask[:, 1:], pos, media, ExtractionOptions())
    with pytest.raises(LyraError):
        extract_forward(model, emb, mask, pos[None].expand(3, -1, -1), media, ExtractionOptions())
    with pytest.raises(LyraError):
        LayerwiseLM(torch.nn.Linear(2, 2))


def test_mrope_qwen2_vl_text_model():
    from transformers import Qwen2VLTextConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLTextModel

    torch.manual_seed(0)
    cfg = Qwen2VLTextConfig(hidden_size=D, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                            intermediate_size=128, vocab_size=1000,
                            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
    cfg._attn_implementation = "sdpa"

    class TextLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Qwen2VLTextModel(cfg)
            self.lm_head = torch.nn.Linear(D, 1000, bias=False)

    lm = TextLM().eval()
    emb, media = sample(3, 24, 5, 13)
    L = emb.shape[0]
    # M-RoPE positions: a 1 x 4 x 6 grid for the media block, text after it starts at start + max(h, w)
    t = torch.arange(L)
    pos = torch.stack([t, t, t])
    grid = torch.stack(torch.meshgrid(torch.arange(1), torch.arange(4), torch.arange(6), indexing="ij")).reshape(3, -1)
    pos[:, 3:27] = 3 + grid
    pos[:, 27:] = 3 + 6 + torch.arange(5)
    pos = pos[:, None]  # (3, 1, L)
    args = (emb[None], torch.ones(1, L, dtype=torch.long), pos, media[None])
    with torch.no_grad():
        ref = lm.lm_head(lm.model(inputs_embeds=emb[None], position_ids=pos).last_hidden_state)
        res = extract_forward(lm, *args, ExtractionOptions(keep=1.0, gap=2))
        pruned = extract_forward(lm, *args, ExtractionOptions(keep=0.5, gap=2, min_keep=1))
    torch.testing.assert_close(lm.lm_head(res.hidden), ref, atol=ATOL, rtol=ATOL)
    assert pruned.position_ids.shape == (3, 1, L - 12)
    assert torch.equal(pruned.position_ids[:, 0], pos[:, 0, pruned.kept[0]])  # original 3-D ids kept
    assert LayerwiseLM(lm).mrope


def test_lyra_qwen2_vl_backbone():
    """Lyra's qwen2-vl backbone: LayerwiseLM finds its text model; keep=1 equals its forward; decoding runs."""
    pytest.importorskip("lyra_qwen2_vl")
    from lyra_qwen2_vl.llm import Qwen2VLLLM

    torch.manual_seed(0)
    text = dict(hidden_size=D, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=128, vocab_size=1000,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]})
    llm = Qwen2VLLLM.from_options(Qwen2VLLLM.Options(tokenizer="qwen2", config={"text_config": text})).eval()
    emb, mask, _, media = left_pad([sample(3, 16, 4, 14), sample(2, 8, 3, 15)])
    pos = llm.position_ids(mask)  # (3, B, L)
    with torch.no_grad():
        ref = llm(emb, mask, position_ids=pos).logits[:, -1]
        res = extract_forward(llm, emb, mask, pos, media, ExtractionOptions(keep=1.0, gap=2))
        torch.testing.assert_close(res.logits_last, ref, atol=ATOL, rtol=ATOL)
        state = extract_forward(llm, emb, mask, pos, media, ExtractionOptions(keep=0.5, gap=2, min_keep=2),
                                cache=DynamicCache())
        step = extract_decode_step(llm, state, llm.embed_tokens(state.logits_last.argmax(-1)[:, None]),
                                   llm.next_position_ids(pos))
    assert step.logits.shape == (2, 1000) and torch.isfinite(step.logits).all()
    assert step.state.position_ids.shape[0] == 3
