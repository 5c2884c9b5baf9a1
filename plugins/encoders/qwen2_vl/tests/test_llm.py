"""The ``qwen2-vl`` LLM: M-RoPE positions equal transformers' get_rope_index, cached decoding, HF folders, options."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lyra_qwen2_vl.llm import Qwen2VLLLM, text_key
from lyra_sdk.errors import CheckpointError, ConfigError, LyraError
from lyra_sdk.interfaces import MediaSpan, Modality

TYPES = {Modality.IMAGE: 1, Modality.VIDEO: 2}


@pytest.fixture(scope="module")
def llm(reference, vl):
    model = Qwen2VLLLM.from_options(Qwen2VLLLM.Options(tokenizer="qwen2", config=vl.QWEN2VL))
    model.model.model.load_state_dict(reference.model.language_model.state_dict())
    model.model.lm_head.load_state_dict(reference.lm_head.state_dict())
    return model.eval()


def _layout(rows, length):
    """rows: per sample a list of ("text", n) / ("speech", n) / (modality, (t, h, w)) parts; left padded."""
    bsz = len(rows)
    mask = torch.zeros(bsz, length, dtype=torch.long)
    types = torch.zeros(bsz, length, dtype=torch.long)
    spans, image_grids, video_grids = [], [], []
    for b, parts in enumerate(rows):
        n = sum(p[1] if isinstance(p[1], int) else p[1][0] * p[1][1] * p[1][2] for p in parts)
        pos, row_spans = length - n, []
        mask[b, pos:] = 1
        for kind, size in parts:
            if kind in ("text", "speech"):
                if kind == "speech":
                    row_spans.append(MediaSpan(Modality.SPEECH, pos, size))
                pos += size
                continue
            t, h, w = size
            row_spans.append(MediaSpan(kind, pos, t * h * w, torch.tensor([t, h, w])))
            types[b, pos:pos + t * h * w] = TYPES[kind]
            (image_grids if kind is Modality.IMAGE else video_grids).append([t, 2 * h, 2 * w])  # patch grids
            pos += t * h * w
        spans.append(row_spans)
    grids = [torch.tensor(g) if g else None for g in (image_grids, video_grids)]
    return mask, types, spans, grids


def test_positions_equal_get_rope_index(llm, reference):
    rows = [
        [("text", 5), (Modality.IMAGE, (1, 2, 3)), ("text", 4), (Modality.IMAGE, (1, 3, 2)), ("text", 2)],
        [("text", 3), (Modality.VIDEO, (3, 2, 2)), ("speech", 6), ("text", 3)],   # t > max(h, w)
        [("text", 2), (Modality.IMAGE, (1, 1, 4)), ("speech", 4), (Modality.VIDEO, (2, 3, 1)), ("text", 1)],
        [("text", 7)],
    ]
    mask, types, spans, (image_grids, video_grids) = _layout(rows, 40)
    ids = torch.randint(0, 1000, mask.shape)
    ours = llm.position_ids(mask, spans)
    theirs, _ = reference.model.get_rope_index(ids, types, image_grids, video_grids, mask)
    assert ours.shape == (3, 4, 40)
    assert torch.equal(ours[:, mask.bool()], theirs[:, mask.bool()])
    assert torch.equal(ours[:, 3], llm.position_ids(mask[3:], None)[:, 0])  # text only: plain 1-D positions


def test_grid_must_match_span(llm):
    mask = torch.ones(1, 6, dtype=torch.long)
    with pytest.raises(LyraError, match="does not match its grid"):
        llm.position_ids(mask, [[MediaSpan(Modality.IMAGE, 1, 4, torch.tensor([1, 1, 2]))]])


def test_cached_decoding_with_3d_positions_equals_full_forward(llm):
    mask, _, spans, _ = _layout([[("text", 4), (Modality.IMAGE, (1, 2, 2)), ("text", 3)],
                                 [("text", 2), (Modality.VIDEO, (2, 2, 1)), ("text", 2)]], 12)
    torch.manual_seed(0)
    embeds = torch.randn(2, 12, 64)
    pos = llm.position_ids(mask, spans)
    with torch.no_grad():
        out = llm(embeds, mask, pos, use_cache=True, logits_to_keep=1)
        steps, cache, all_embeds, all_mask, all_pos = [], out.past_key_values, embeds, mask, pos
        for _ in range(3):
            nxt = out.logits[:, -1].argmax(-1)
            new_embed = llm.embed_tokens(nxt[:, None])
            all_pos = torch.cat([all_pos, llm.next_position_ids(all_pos)], dim=-1)
            all_mask = torch.cat([all_mask, torch.ones(2, 1, dtype=torch.long)], dim=-1)
            all_embeds = torch.cat([all_embeds, new_embed], dim=1)
            out = llm(new_embed, all_mask, all_pos[..., -1:], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits[:, -1])
        full = llm(all_embeds, all_mask, all_pos).logits[:, -3:]
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=0, atol=1e-5)
    with torch.no_grad():  # 2-D or missing positions are broadcast to the three axes
        flat = llm(embeds, mask, pos[0]).logits
        none = llm(embeds, mask).logits
    assert flat.shape == none.shape == (2, 12, 151936)


def test_media_wrappers_and_options(llm, vl):
    assert llm.media_wrappers[Modality.IMAGE] == ("<|vision_start|>", "<|vision_end|>")
    assert llm.media_wrappers[Modality.VIDEO] == llm.media_wrappers[Modality.IMAGE]
    assert llm.hidden_size == 64 and llm.vocab_size == 151936
    assert llm.model.lm_head.weight.data_ptr() == llm.model.model.embed_tokens.weight.data_ptr()  # tied
    with pytest.raises(ConfigError, match="exactly one of path"):
        Qwen2VLLLM.from_options(Qwen2VLLLM.Options(tokenizer="qwen2"))
    with pytest.raises(ConfigError, match="llm.options.config"):
        Qwen2VLLLM.from_options(Qwen2VLLLM.Options(tokenizer="qwen2", config={"text_config": {"hidden_size": "x"}}))


def test_saved_options_rebuild_same_model(llm):
    opts = llm.saved_options()
    assert opts.path is None and opts.config["text_config"]["hidden_size"] == 64
    again = Qwen2VLLLM.from_options(Qwen2VLLLM.Options.model_validate(json.loads(opts.model_dump_json())))
    again.load_state_dict(llm.state_dict())
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(again(again.embed_tokens(ids), torch.ones_like(ids)).logits,
                           llm(llm.embed_tokens(ids), torch.ones_like(ids)).logits)


def test_text_key_layouts():
    assert text_key("model.language_model.layers.0.mlp.up_proj.weight") == "model.layers.0.mlp.up_proj.weight"
    assert text_key("model.layers.0.mlp.up_proj.weight") == "model.layers.0.mlp.up_proj.weight"
    assert text_key("model.embed_tokens.weight") == "model.embed_tokens.weight"
    assert text_key("lm_head.weight") == "lm_head.weight"
    for other in ("visual.blocks.0.attn.qkv.weight", "model.visual.merger.ln_q.weight",
                  "model.mm_speech_projector.linear1.weight", "speech_generator.layers.0.mlp.up_proj.weight"):
        assert text_key(other) is None


def _copy_folder(src, dst, rename=None, model_type=None):
    from safetensors.torch import load_file, save_file

    dst.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    if model_type:
        cfg["model_type"] = model_type
    (dst / "config.json").write_text(json.dumps(cfg))
    shutil.copy(src / "generation_config.json", dst / "generation_config.json")
    tensors = load_file(str(src / "model.safetensors"))
    if rename:
        tensors = {rename(k): v for k, v in tensors.items() if rename(k)}
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_loads_language_model_of_hf_and_lyra_folders(llm, reference, tmp_path):
    reference.generation_config.eos_token_id = [151645, 151643]
    reference.save_pretrained(str(tmp_path / "v5"))
    v4 = lambda k: k.replace("model.language_model.", "model.").replace("model.visual.", "visual.")
    lyra = lambda k: v4(k) if "visual" in k or "language_model" in k else k
    folders = [tmp_path / "v5", _copy_folder(tmp_path / "v5", tmp_path / "v4", v4)]
    lyra_folder = _copy_folder(tmp_path / "v5", tmp_path / "lyra", lyra, model_type="Lyra_Qwen2VL")
    from safetensors.torch import load_file, save_file

    extra = load_file(str(lyra_folder / "model.safetensors"))
    extra["model.mm_speech_projector.linear1.weight"] = torch.zeros(2, 2)  # other components' keys are ignored
    save_file(extra, str(lyra_folder / "model.safetensors"))
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        want = llm(llm.embed_tokens(ids), torch.ones_like(ids)).logits
        for folder in folders + [lyra_folder]:
            loaded = Qwen2VLLLM.from_options(Qwen2VLLLM.Options(path=str(folder), tokenizer="qwen2")).eval()
            assert torch.equal(loaded(loaded.embed_tokens(ids), torch.ones_like(ids)).logits, want)
            assert {151643, 151645} <= set(loaded.tokenizer.eos_token_ids)
    broken = _copy_folder(tmp_path / "v5", tmp_path / "broken",
                          lambda k: None if k.endswith("layers.1.mlp.up_proj.weight") else k)
    with pytest.raises(CheckpointError, match=r"missing key 'model\.layers\.1\.mlp\.up_proj\.weight'"):
        Qwen2VLLLM.from_options(Qwen2VLLLM.Options(path=str(broken), tokenizer="qwen2"))
    other = _copy_folder(tmp_path / "v5", tmp_path / "other", model_type="qwen2")
    with pytest.raises(CheckpointError, match="holds a 'qwen2' model"):
        Qwen2VLLLM.from_options(Qwen2VLLLM.Options(path=str(other), tokenizer="qwen2"))
