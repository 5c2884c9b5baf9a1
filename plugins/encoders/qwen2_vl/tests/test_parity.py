"""Parity with transformers: a Lyra model built from the qwen2-vl plugins, holding a tiny
``Qwen2VLForConditionalGeneration``'s weights, gives the reference's logits (fp32, atol 1e-5) for the same prompt:
the reference runs on ``input_ids`` with ``<|image_pad|>`` / ``<|video_pad|>`` at the media spans, its own
pixel processing (images) and its own M-RoPE index.
"""

from __future__ import annotations

import pytest
import torch

from lyra_sdk.fusion import MODALITY_IDS
from lyra_sdk.interfaces import Modality
from lyra_sdk.media.video import VideoClip
from lyra_sdk.prompt import Prompt

ATOL = 1e-5


@pytest.fixture(scope="module")
def hf_images():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil()
    return lambda images: processor(images=images, return_tensors="pt")


def reference_inputs(batch, vl):
    """``input_ids`` with the media pad tokens and ``mm_token_type_ids`` (1 image, 2 video) for a fused batch."""
    image = batch.modality_ids == MODALITY_IDS[Modality.IMAGE]
    video = batch.modality_ids == MODALITY_IDS[Modality.VIDEO]
    ids = batch.input_ids.masked_fill(image, vl.IMAGE_TOKEN).masked_fill(video, vl.VIDEO_TOKEN)
    return ids, image.int() + 2 * video.int()


def _close(ours, theirs, mask):
    real = mask.bool()
    diff = (ours[real] - theirs[real]).abs().max().item()
    torch.testing.assert_close(ours[real], theirs[real], rtol=0, atol=ATOL)
    return diff


def test_image_prompt_logits_equal_reference(lyra_vl, reference, hf_images, vl):
    image = vl.noise_image(100, 70, 3)
    batch = lyra_vl.prepare([Prompt("<image>\nWhat is in the picture?", {"image": [image]})])
    ids, types = reference_inputs(batch, vl)
    pixels = hf_images([image])
    assert batch.spans[0][0].grid.tolist() == [1, 2, 4] and int((types == 1).sum()) == 8
    with torch.no_grad():
        ours = lyra_vl(batch, compute_loss=False)[0].logits
        theirs = reference(input_ids=ids, attention_mask=batch.attention_mask, pixel_values=pixels["pixel_values"],
                           image_grid_thw=pixels["image_grid_thw"], mm_token_type_ids=types).logits
    assert _close(ours, theirs, batch.attention_mask) <= ATOL


def test_video_prompt_logits_equal_reference(lyra_vl, reference, vl):
    frames = [vl.noise_image(64, 48, 20 + i) for i in range(3)]  # odd: the last frame is repeated
    clip = VideoClip(frames, [0.0, 0.5, 1.0], 2.0, 1.5)
    batch = lyra_vl.prepare([Prompt("<video>\nWhat happens?", {"video": [clip]})])
    ids, types = reference_inputs(batch, vl)
    feats = lyra_vl.encoders["video"].featurize([clip])
    assert feats.tensors["grid_thw"].tolist() == [[2, 4, 4]]  # 56x56 frames, 2 temporal patches
    with torch.no_grad():
        ours = lyra_vl(batch, compute_loss=False)[0].logits
        theirs = reference(input_ids=ids, attention_mask=batch.attention_mask,
                           pixel_values_videos=feats.tensors["pixel_values"], video_grid_thw=feats.tensors["grid_thw"],
                           mm_token_type_ids=types).logits
    assert _close(ours, theirs, batch.attention_mask) <= ATOL


def test_left_padded_batch_with_different_image_counts(lyra_vl, reference, hf_images, vl):
    a, b, c = vl.noise_image(100, 70, 4), vl.noise_image(56, 84, 5), vl.noise_image(60, 60, 6)
    prompts = [Prompt("<image>\nDescribe it.", {"image": [a]}),
               Prompt("Compare <image> with <image>, please, in a few words.", {"image": [b, c]})]
    batch = lyra_vl.prepare(prompts)
    mask = batch.attention_mask
    assert mask[0, 0] == 0 and mask[1].all()  # the shorter prompt is left-padded
    ids, types = reference_inputs(batch, vl)
    pixels = hf_images([a, b, c])
    with torch.no_grad():
        ours = lyra_vl(batch, compute_loss=False)[0].logits
        theirs = reference(input_ids=ids, attention_mask=mask, pixel_values=pixels["pixel_values"],
                           image_grid_thw=pixels["image_grid_thw"], mm_token_type_ids=types).logits
        _close(ours, theirs, mask)
        for i, prompt in enumerate(prompts):
            alone = lyra_vl.prepare([prompt])
            single = lyra_vl(alone, compute_loss=False)[0].logits[0]
            torch.testing.assert_close(ours[i][mask[i].bool()], single, rtol=0, atol=ATOL)


def test_greedy_generation_equals_reference_generate(lyra_vl, reference, hf_images, vl):
    image = vl.noise_image(84, 56, 7)
    prompt = Prompt("<image>\nTell a story.", {"image": [image]})
    batch = lyra_vl.prepare([prompt])
    ids, types = reference_inputs(batch, vl)
    pixels = hf_images([image])
    _, ours = lyra_vl.generate_ids([prompt], max_new_tokens=6, temperature=0.0)
    with torch.no_grad():
        out = reference.generate(input_ids=ids, attention_mask=batch.attention_mask, do_sample=False,
                                 pixel_values=pixels["pixel_values"], image_grid_thw=pixels["image_grid_thw"],
                                 mm_token_type_ids=types, max_new_tokens=6, min_new_tokens=6, eos_token_id=None,
                                 pad_token_id=0)
    theirs = out[0, ids.shape[1]:].tolist()
    assert ours[0] == theirs[: len(ours[0])] and len(ours[0]) >= 3
