"""LM-fused beam search over CTC-compressed speech (lyra_sdk.mechanisms.ctc_beam, speech_compression.decode)."""

from __future__ import annotations

import math

import pytest
import torch

from lyra_sdk import ConfigError, LyraConfig
from lyra_sdk.prompt import Prompt
from lyra_sdk.interfaces import Modality
from lyra_sdk.mechanisms.ctc_beam import BackbonePrior, PriorState, lm_beam_search
from lyra_sdk.mechanisms.ctc_compression import SpeechCompressionOptions, ctc_compress


class BigramPrior:
    """A toy LM: log P(next | last token) from a table; counts its steps."""

    def __init__(self, table: dict[int, dict[int, float]], vocab: int = 8) -> None:
        self.table, self.vocab, self.steps = table, vocab, 0

    def _state(self, last: int) -> PriorState:
        lp = torch.full((self.vocab,), math.log(1e-3))
        for t, p in self.table.get(last, {}).items():
            lp[t] = math.log(p)
        return PriorState(lp, last, torch.zeros(1, 1), 0)

    def start(self) -> PriorState:
        return self._state(-1)

    def step(self, state: PriorState, token_id: int) -> PriorState:
        self.steps += 1
        return self._state(token_id)


A, B = math.log(0.6), math.log(0.4)


def test_the_prior_overrules_a_close_acoustic_call_and_weight_zero_is_greedy():
    cands = [[(1, 0.0)], [(2, A), (3, B)], [(4, 0.0)]]  # the acoustics prefer 2 over 3, narrowly
    prior = BigramPrior({-1: {1: 0.9}, 1: {3: 0.9, 2: 0.001}, 3: {4: 0.9}, 2: {4: 0.9}})
    fused = lm_beam_search(cands, prior, None, beam_size=4, lm_weight=1.0)
    assert fused == [(0, 1), (1, 3), (2, 4)]
    greedy = lm_beam_search(cands, prior, None, beam_size=1, lm_weight=0.0, skip_score=-1e9)
    assert greedy == [(0, 1), (1, 2), (2, 4)]


def test_an_unlikely_group_is_skipped_and_the_end_of_turn_counts():
    cands = [[(1, 0.0)], [(5, math.log(0.02))], [(4, 0.0)]]  # a spurious piece between two sure ones
    prior = BigramPrior({-1: {1: 0.9}, 1: {4: 0.9}, 4: {7: 0.9}})
    assert lm_beam_search(cands, prior, 7, lm_weight=1.0, skip_score=-2.0, token_bonus=0.0) == [(0, 1), (2, 4)]
    assert lm_beam_search(cands, prior, 7, lm_weight=0.0, skip_score=-5.0, token_bonus=0.0) == [(0, 1), (1, 5), (2, 4)]
    # two readings tie on acoustics and on the LM inside the turn; only the end-of-turn score separates them
    tie = [[(1, math.log(0.5)), (2, math.log(0.5))]]
    ends = BigramPrior({-1: {1: 0.5, 2: 0.5}, 1: {7: 0.01}, 2: {7: 0.9}})
    assert lm_beam_search(tie, ends, 7, lm_weight=1.0, skip_score=-9.0) == [(0, 2)]
    with pytest.raises(ValueError, match="beam_size"):
        lm_beam_search(tie, ends, 7, beam_size=0)


def test_backbone_prior_matches_full_forwards_and_leaves_its_states_usable(text_model):
    llm = text_model.llm
    ctx = llm.tokenizer.encode("Hello there, how are")
    prior = BackbonePrior(llm, ctx)

    def full(ids: list[int]) -> torch.Tensor:
        t = torch.tensor([ids])
        mask = torch.ones_like(t)
        with torch.no_grad():
            out = llm(llm.embed_tokens(t), mask, position_ids=llm.position_ids(mask))
        return out.logits[0, -1].float().log_softmax(-1)

    s0 = prior.start()
    torch.testing.assert_close(s0.logprobs, full(ctx), atol=1e-5, rtol=0)
    a, b = 11, 257
    s1 = prior.step(s0, a)
    s1_again = prior.step(s0, a)  # the parent state was not extended in place
    torch.testing.assert_close(s1.logprobs, full(ctx + [a]), atol=1e-5, rtol=0)
    torch.testing.assert_close(s1_again.logprobs, s1.logprobs)
    s2 = prior.step(s1, b)
    torch.testing.assert_close(s2.logprobs, full(ctx + [a, b]), atol=1e-5, rtol=0)
    assert s2.length == len(ctx) + 2
    with pytest.raises(ValueError, match="context"):
        BackbonePrior(llm, [])


def _clip(table: torch.Tensor, says: list[int | None]) -> torch.Tensor:
    return torch.stack([table[v] * 40.0 if v is not None else torch.zeros(table.shape[1]) for v in says])


def test_ctc_compress_with_a_prior_reads_the_chosen_pieces_embeddings():
    torch.manual_seed(0)
    table = torch.linalg.qr(torch.randn(16, 8))[0].T.contiguous()  # (8, 16) orthonormal rows
    x = _clip(table, [1, 1, None, 2, None, 4])
    x[3] = 0.55 * table[2] * 40 + 0.45 * table[3] * 40  # group 2 says 2, or maybe 3
    opts = SpeechCompressionOptions(output="embeddings", decode="beam", temperature=1.0, lm_weight=1.0,
                                    blank_logit=10.0)
    prior = BigramPrior({-1: {1: 0.9}, 1: {3: 0.9}, 3: {4: 0.9}})
    out = ctc_compress(x, table, opts, prior, None)
    assert out.groups.tolist() == [0, 3, 5]
    torch.testing.assert_close(out.tokens, table[[1, 3, 4]])  # exactly the typed pieces
    greedy = ctc_compress(x, table, opts)  # no prior: greedy posterior mix
    assert greedy.groups.tolist() == [0, 3, 5] and not torch.allclose(greedy.tokens[1], table[3], atol=1e-2)
    many = ctc_compress(x, table, opts.model_copy(update={"beam_max_groups": 2}), prior, None)  # too long: greedy
    torch.testing.assert_close(many.tokens, greedy.tokens)
    skip_all = opts.model_copy(update={"skip_score": 0.0, "token_bonus": -100.0})
    kept = ctc_compress(x, table, skip_all, BigramPrior({}), None)
    assert kept.tokens.shape[0] == 1  # never an empty speech slot


def test_skip_scores_per_group_and_a_confident_group_outlasts_the_prior_with_skip_from_blank():
    cands = [[(1, 0.0)], [(5, 0.0)], [(4, 0.0)]]
    prior = BigramPrior({-1: {1: 0.9}, 1: {4: 0.9}, 5: {4: 0.9}})  # the LM dislikes 5 after 1
    assert lm_beam_search(cands, prior, None, lm_weight=1.0, skip_score=[-1.0, -30.0, -1.0],
                          token_bonus=0.0) == [(0, 1), (1, 5), (2, 4)]
    assert lm_beam_search(cands, prior, None, lm_weight=1.0, skip_score=-1.0, token_bonus=0.0) == [(0, 1), (2, 4)]
    assert lm_beam_search(cands, prior, None, lm_weight=1.0, skip_score=torch.tensor(-1.0),  # a 0-d tensor is a number
                          token_bonus=0.0) == [(0, 1), (2, 4)]
    with pytest.raises(ValueError, match="2 groups' scores for 3 groups"):
        lm_beam_search(cands, prior, None, skip_score=[-1.0, -1.0])

    torch.manual_seed(0)
    table = torch.linalg.qr(torch.randn(16, 8))[0].T.contiguous()  # (8, 16) orthonormal rows
    sure = _clip(table, [1, None, 5, None, 4])  # piece 5 said clearly (blank posterior ~e-13)
    unsure = sure.clone()
    unsure[2] = table[5] * 9.6  # logit 9.6 against the blank's 10: blank posterior 0.6
    opts = SpeechCompressionOptions(output="embeddings", decode="beam", temperature=1.0, lm_weight=1.0,
                                    blank_logit=10.0, skip_score=-1.0, token_bonus=0.0, blank_threshold=0.9)
    blank_aware = opts.model_copy(update={"skip_from_blank": True})
    said = lambda o, x: ctc_compress(x, table, o, prior, None).pieces.tolist()  # noqa: E731
    assert said(blank_aware, sure) == [1, 5, 4]  # sure of what it heard: kept against the LM
    assert said(blank_aware, unsure) == [1, 4]  # unsure, and the LM disagrees: dropped
    assert said(opts, sure) == [1, 4]  # one skip score for all: the LM drops even the sure group
    assert said(opts.model_copy(update={"blank_threshold": 0.5}), unsure) == [1, 4]  # 0.5: never a group


def test_beam_needs_embeddings_output(tiny_config):
    with pytest.raises(ConfigError, match="output: embeddings"):
        LyraConfig.from_dict(tiny_config(), ["speech_compression.decode=beam"])
    cfg = LyraConfig.from_dict(tiny_config(), ["speech_compression.decode=beam",
                                               "speech_compression.output=embeddings"])
    assert cfg.speech_compression.lm_weight == 0.3 and cfg.speech_compression.beam_size == 4


def test_model_uses_the_prompt_context_at_inference_and_greedy_in_training(audio_model, tone, monkeypatch):
    import lyra_sdk.mechanisms.ctc_beam as beam_mod
    from lyra_sdk.prompt import build_segments

    model = audio_model
    seen = []

    class Recording(BackbonePrior):
        def __init__(self, llm, context_ids):
            seen.append(list(context_ids))
            super().__init__(llm, context_ids)

    monkeypatch.setattr(beam_mod, "BackbonePrior", Recording)
    prompt = Prompt("Listen: <speech>\nTranscribe it.", {"speech": [tone(0.6)]})
    base = dict(output="embeddings", temperature=1.0, blank_threshold=1.0, beam_size=2, beam_candidates=3)
    saved, was_training = model.config.speech_compression, model.training
    try:
        model.config.speech_compression = SpeechCompressionOptions(decode="beam", **base)
        model.eval()
        batch = model.prepare([prompt])
        segs = build_segments(model.llm, prompt, model.config.system_prompt)
        slot = next(i for i, s in enumerate(segs) if s.modality is Modality.SPEECH)
        assert seen == [[t for s in segs[:slot] if s.modality is None for t in s.ids]]
        speech = batch.inputs_embeds[0][batch.media_mask[0]]
        table = model.llm.input_embeddings()
        nearest = (speech @ table.T).argmax(-1)
        torch.testing.assert_close(speech, table[nearest])  # rows of the table: typed-like input
        model.train()
        trained = model.prepare([prompt])
        model.config.speech_compression = SpeechCompressionOptions(decode="greedy", **base)
        greedy = model.prepare([prompt])
        assert len(seen) == 1  # training mode never ran the search
        torch.testing.assert_close(trained.inputs_embeds, greedy.inputs_embeds)
    finally:
        model.config.speech_compression = saved
        model.train(was_training)


@pytest.fixture(scope="module")
def routed_model(host, tiny_config):
    """The tiny speech model with a `speech` LoRA route (its own projector) and beam-decoded compression."""
    from lyra_sdk import Lyra

    cfg = tiny_config(speech={"plugin": "logmel-patch", "options": {"output_dim": 32, "n_mels": 16}})
    cfg["lora"] = {"adapters": {"speech": {"r": 4, "alpha": 8, "projectors": ["speech"]}}}
    cfg["speech_compression"] = {"output": "embeddings", "decode": "beam", "temperature": 1.0,
                                 "blank_threshold": 1.0, "beam_size": 2, "beam_candidates": 3}
    model = Lyra.from_config(cfg, host=host).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero (route == base); make the route differ
                p.normal_(0, 0.5)
    return model


def test_beam_llm_base_answers_a_spoken_prompt_with_the_adapters_off(routed_model, tone):
    from lyra_sdk.generation import generate_tokens

    model, clip = routed_model, tone(0.6)
    spoken, typed = Prompt("<speech>", {"speech": [clip]}), Prompt("<speech>\nTranscribe it.", {"speech": [clip]})
    saved = model.config.speech_compression
    try:
        model.config.speech_compression = saved.model_copy(update={"beam_llm": "route"})
        on_route = model.prepare([spoken])
        assert model.lora.active == "speech"
        route_answer = model.generate_ids([spoken], max_new_tokens=4)[1]
        model.config.speech_compression = saved.model_copy(update={"beam_llm": "base"})
        as_text = model.prepare([spoken])
        assert model.lora.active is None  # answered as the typed transcript would be
        # the same speech tokens: the route's projector still heard the clip, and the beam chose the same pieces
        torch.testing.assert_close(as_text.inputs_embeds, on_route.inputs_embeds)
        base_answer = model.generate_ids([spoken], max_new_tokens=4)[1]
        opts = model._options(None, {"max_new_tokens": 4})
        logits = {}
        for route in ("speech", None):
            with model.lora.using(route):
                logits[route] = model.forward(as_text, compute_loss=False)[0].logits
                answer = generate_tokens(model.llm, as_text.inputs_embeds, as_text.attention_mask,
                                         model.position_ids(as_text), opts, media_mask=as_text.media_mask).sequences
            assert answer == (route_answer if route else base_answer)
        assert not torch.allclose(logits["speech"], logits[None], atol=1e-3)  # the route does change the answer
        model.prepare([typed])
        assert model.lora.active == "speech"  # a typed instruction keeps the route that learned it
        model.prepare([spoken, typed])
        assert model.lora.active == "speech"  # one rule per batch: any typed instruction keeps it
        model.prepare([spoken], route="speech")
        assert model.lora.active == "speech"  # a route asked for by name is kept
        model.config.speech_compression = saved.model_copy(update={"beam_llm": "base", "beam_max_groups": 1})
        model.prepare([spoken])
        assert model.lora.active == "speech"  # compressed greedily (too long for the beam): not typed-like
        model.config.speech_compression = saved.model_copy(update={"beam_llm": "base", "beam_max_groups": 1,
                                                                   "greedy_pieces": "best"})
        model.prepare([spoken])
        assert model.lora.active is None  # greedy, but read as the best pieces: typed-like again
    finally:
        model.config.speech_compression = saved


def test_hear_returns_the_pieces_the_llm_reads(routed_model, tone):
    from lyra_sdk import LyraError
    from lyra_sdk.mechanisms.vocab_ctc import vocab_ctc_decode

    model, clip = routed_model, tone(0.6)
    spoken = Prompt("<speech>", {"speech": [clip]})
    tok = model.llm.tokenizer
    assert model.prepare([Prompt("No speech here.")], heard=True).heard == [None]
    batch = model.prepare([spoken], heard=True)
    ids = batch.heard[0]
    assert ids
    # the beam's pieces are exactly the embeddings the LLM reads in the speech slot
    speech = batch.inputs_embeds[0][batch.media_mask[0]]
    torch.testing.assert_close(speech, model.llm.input_embeddings()[torch.tensor(ids)])
    heard = model.hear([spoken, "No speech here."])
    assert heard == [tok.decode(ids, skip_special_tokens=True), None]
    collected: list = []
    model.generate([spoken], max_new_tokens=2, heard=collected)
    assert collected == heard[:1]  # generation reports the same transcript, from the same pass
    saved = model.config.speech_compression
    try:  # greedy compression: the heard text is the projector's CTC read-out
        model.config.speech_compression = saved.model_copy(update={"decode": "greedy"})
        (tokens, _), = model.encode_media(Modality.SPEECH, [model.load_media(Modality.SPEECH, clip)])
        mask = torch.ones(1, len(tokens), dtype=torch.bool)
        readout = vocab_ctc_decode(tokens[None], mask, model.llm.input_embeddings(), saved.temperature,
                                   saved.blank_logit)[0]
        assert model.prepare([spoken], heard=True).heard == [readout]
        model.config.speech_compression = None
        with pytest.raises(LyraError, match="speech_compression"):
            model.hear([spoken])
        assert model.prepare([spoken], heard=True).heard is None
        out: list = []
        model.generate([spoken], max_new_tokens=2, heard=out)
        assert out == [None]
    finally:
        model.config.speech_compression = saved
