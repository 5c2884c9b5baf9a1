"""Fusion: media embeddings land exactly at their placeholders, for several placeholders, media and samples."""

from __future__ import annotations

import torch

from lyra_sdk import Modality
from lyra_sdk.fusion import IGNORE_INDEX, MODALITY_IDS, fuse
from lyra_sdk.prompt import Prompt, Segment


def _embed(ids):
    return torch.nn.functional.one_hot(ids % 8, 8).float()  # (B, L, 8): text rows are one-hot


def test_media_at_placeholder_positions_batch_left_and_right():
    segs = [
        [Segment([1, 2]), Segment(modality=Modality.SPEECH, index=0), Segment([3]),
         Segment(modality=Modality.IMAGE, index=0), Segment(modality=Modality.SPEECH, index=1), Segment([4, 5])],
        [Segment([6]), Segment(modality=Modality.IMAGE, index=0), Segment([7], train=True)],
    ]
    s0, s1, i0 = torch.full((3, 8), 10.0), torch.full((2, 8), 20.0), torch.full((4, 8), 30.0)
    j0 = torch.full((1, 8), 40.0)
    media = [{Modality.SPEECH: [(s0, None), (s1, None)], Modality.IMAGE: [(i0, None)]},
             {Modality.IMAGE: [(j0, None)]}]
    for side in ("left", "right"):
        fb = fuse(segs, media, _embed, pad_id=0, padding_side=side)
        n0, n1 = 2 + 3 + 1 + 4 + 2 + 2, 1 + 1 + 1
        assert fb.inputs_embeds.shape == (2, n0, 8)
        off = n0 - n1 if side == "left" else 0
        e = fb.inputs_embeds
        assert torch.equal(e[0, 2:5], s0) and torch.equal(e[0, 6:10], i0) and torch.equal(e[0, 10:12], s1)
        assert torch.equal(e[1, off + 1 : off + 2], j0)
        assert torch.equal(e[0, 0], _embed(torch.tensor([1]))[0])  # text is the LLM's embedding
        assert [(s.modality, s.start, s.length) for s in fb.spans[0]] == [
            (Modality.SPEECH, 2, 3), (Modality.IMAGE, 6, 4), (Modality.SPEECH, 10, 2)]
        assert fb.spans[1][0].start == off + 1
        assert fb.attention_mask[1].sum() == n1 and fb.attention_mask[0].all()
        assert (fb.modality_ids[0, 2:5] == MODALITY_IDS[Modality.SPEECH]).all()
        assert (fb.modality_ids[0, 6:10] == MODALITY_IDS[Modality.IMAGE]).all()
        assert fb.labels[1, off + 2] == 7 and (fb.labels[0] == IGNORE_INDEX).all()


def test_model_fuses_real_encoder_output(audio_model, tone):
    """Through the model: each clip's projected tokens appear at its placeholder, in order, in a batch."""
    a, b, c = tone(1.0, 300), tone(0.5, 600), tone(2.0, 900)
    prompts = [Prompt("<speech> then <sound> and <speech>?", {"speech": [a, c], "sound": [b]}),
               Prompt("just <sound>", {"sound": [a]})]
    fb = audio_model.prepare(prompts)
    with torch.no_grad():
        sp = audio_model.encode_media(Modality.SPEECH, [a, c])
        so = audio_model.encode_media(Modality.SOUND, [b, a])
    spans = fb.spans[0]
    assert [s.modality for s in spans] == [Modality.SPEECH, Modality.SOUND, Modality.SPEECH]
    for span, (emb, _) in zip(spans, [sp[0], so[0], sp[1]]):
        assert span.length == emb.shape[0]
        torch.testing.assert_close(fb.inputs_embeds[0, span.start : span.start + span.length], emb, rtol=0, atol=0)
    s = fb.spans[1][0]
    torch.testing.assert_close(fb.inputs_embeds[1, s.start : s.start + s.length], so[1][0], rtol=0, atol=0)
    assert fb.attention_mask[1, : fb.inputs_embeds.shape[1] - fb.attention_mask[1].sum()].sum() == 0  # left padding


def test_labels_cover_exactly_the_assistant_turns(text_model):
    from lyra_sdk.interfaces import ChatMessage

    tok = text_model.llm.tokenizer
    p = Prompt("second question", answer="second answer",
               history=[ChatMessage("user", "first question"), ChatMessage("assistant", "first answer")])
    fb = text_model.prepare([p], padding_side="right")
    labelled = fb.labels[0][fb.labels[0] != IGNORE_INDEX].tolist()
    assert tok.decode(labelled, skip_special_tokens=False) == "first answer<|im_end|>\nsecond answer<|im_end|>\n"
    p.train_history = False
    fb = text_model.prepare([p], padding_side="right")
    labelled = fb.labels[0][fb.labels[0] != IGNORE_INDEX].tolist()
    assert tok.decode(labelled, skip_special_tokens=False) == "second answer<|im_end|>\n"
    # the labelled ids are the ids at those positions (teacher forcing)
    pos = (fb.labels[0] != IGNORE_INDEX).nonzero().squeeze(-1)
    assert torch.equal(fb.input_ids[0, pos], fb.labels[0, pos])
