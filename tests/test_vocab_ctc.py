"""vocab_ctc_loss / vocab_ctc_decode: brute-force CTC equality, aligned tokens win, masking, gradients, errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lyra_sdk.mechanisms import VocabCTCInputError, vocab_ctc_decode, vocab_ctc_loss
from lyra_sdk.mechanisms.vocab_ctc import vocab_ctc_logits


def _brute_force_nll(logits: torch.Tensor, target: list[int], blank: int) -> float:
    """-log sum over every frame path that collapses (merge repeats, drop blanks) to ``target``, in float64."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    total = []
    for path in itertools.product(range(logits.shape[-1]), repeat=logits.shape[0]):
        collapsed = [v for i, v in enumerate(path) if v != blank and (i == 0 or path[i - 1] != v)]
        if collapsed == target:
            total.append(sum(float(logp[t, v]) for t, v in enumerate(path)))
    return -math.log(sum(math.exp(x) for x in total))


def test_loss_equals_brute_force_ctc_over_vocabulary_plus_blank():
    gen = torch.Generator().manual_seed(0)
    vocab = torch.randn(3, 4, generator=gen)  # V = 3 word pieces, blank = index 3
    x = torch.randn(2, 5, 4, generator=gen) * 0.3
    mask = torch.tensor([[True] * 5, [True, True, False, True, False]])  # sample 1: 3 valid tokens, with a hole
    targets = [[0, 2, 2], [1]]
    tau, blank = 0.5, 0.7
    got = vocab_ctc_loss(x, mask, vocab, targets, temperature=tau, blank_logit=blank)
    lg = vocab_ctc_logits(x, vocab, tau, blank)
    assert lg.shape == (2, 5, 4) and torch.all(lg[..., 3] == blank)
    nll0 = _brute_force_nll(lg[0], targets[0], 3)
    nll1 = _brute_force_nll(lg[1][mask[1]], targets[1], 3)  # valid tokens in order, the hole skipped
    assert got.item() == pytest.approx((nll0 + nll1) / 4, rel=1e-5)


def test_aligned_tokens_score_low_and_decode_to_the_transcript():
    vocab = torch.eye(6) * 2.0  # orthogonal word pieces
    blank_tok = torch.zeros(6)  # scores 0 against every piece: the blank (ln 6 + 4) wins
    seq = [blank_tok, vocab[2], vocab[2], blank_tok, vocab[5], blank_tok, vocab[2]]
    x = torch.stack(seq)[None]
    mask = torch.ones(1, 7, dtype=torch.bool)
    assert vocab_ctc_decode(x, mask, vocab, temperature=0.1) == [[2, 5, 2]]
    assert vocab_ctc_decode(x, mask, vocab, temperature=0.1, blank_logit=50.0) == [[]]  # all blank
    good = vocab_ctc_loss(x, mask, vocab, [[2, 5, 2]], temperature=0.1)
    wrong = vocab_ctc_loss(x, mask, vocab, [[3, 5, 2]], temperature=0.1)
    assert good.item() < 0.05 < 1.0 < wrong.item()


def test_samples_without_transcript_or_room_count_for_nothing():
    gen = torch.Generator().manual_seed(1)
    vocab = torch.randn(5, 8, generator=gen)
    x = torch.randn(3, 4, 8, generator=gen, requires_grad=True)
    mask = torch.ones(3, 4, dtype=torch.bool)
    alone = vocab_ctc_loss(x[:1], mask[:1], vocab, [[1, 2]])
    # sample 1 has no transcript; sample 2's needs 5 frames (4 ids + a blank between the repeated 3s): skipped
    both = vocab_ctc_loss(x, mask, vocab, [[1, 2], [], [3, 3, 4, 0]])
    assert both.item() == pytest.approx(alone.item(), rel=1e-6)
    none = vocab_ctc_loss(x, mask, vocab, [[], [], []])
    assert none.item() == 0.0
    none.backward()  # attached to the graph, zero gradient
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_gradient_reaches_the_speech_side_only_when_the_table_is_detached():
    gen = torch.Generator().manual_seed(2)
    table = torch.randn(7, 8, generator=gen, requires_grad=True)
    x = torch.randn(2, 6, 8, generator=gen, requires_grad=True)
    loss = vocab_ctc_loss(x, torch.ones(2, 6, dtype=torch.bool), table.detach(), [[1, 4], [6]])
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and table.grad is None
    with torch.no_grad():  # one step along the gradient lowers the loss
        lower = vocab_ctc_loss(x - 0.1 * x.grad, torch.ones(2, 6, dtype=torch.bool), table, [[1, 4], [6]])
    assert lower.item() < loss.item()


@pytest.mark.parametrize("args, match", [
    (dict(speech_tokens=torch.zeros(2, 3)), "speech_tokens must be"),
    (dict(speech_mask=torch.ones(1, 3)), "speech_mask must be a bool"),
    (dict(text_ids=[[1], [2]]), "one transcript per sample"),
    (dict(text_ids=[[9]]), "outside the vocabulary"),
    (dict(vocab_embeds=torch.zeros(5, 3)), "hidden size"),
    (dict(vocab_embeds=torch.zeros(5, 4, 1)), "vocab_embeds must be"),
    (dict(temperature=0.0), "temperature"),
    (dict(blank_logit=float("nan")), "blank_logit"),
])
def test_bad_inputs_are_named(args, match):
    base = dict(speech_tokens=torch.zeros(1, 3, 4), speech_mask=torch.ones(1, 3, dtype=torch.bool),
                vocab_embeds=torch.zeros(5, 4), text_ids=[[1]])
    with pytest.raises(VocabCTCInputError, match=match):
        vocab_ctc_loss(**{**base, **args})


def test_candidates_are_a_sampled_softmax_over_part_of_the_table():
    gen = torch.Generator().manual_seed(3)
    vocab = torch.randn(9, 4, generator=gen)
    x = torch.randn(2, 6, 4, generator=gen)
    mask = torch.ones(2, 6, dtype=torch.bool)
    ids = [[1, 4], [7, 1, 1]]
    full = vocab_ctc_loss(x, mask, vocab, ids, temperature=0.5)
    every = vocab_ctc_loss(x, mask, vocab, ids, temperature=0.5, candidates=torch.arange(8, -1, -1))  # reordered
    assert every.item() == pytest.approx(full.item(), rel=1e-6)
    some = vocab_ctc_loss(x, mask, vocab, ids, temperature=0.5, candidates=torch.tensor([7, 4, 1]))
    assert some.item() < full.item()  # fewer competitors; the blank keeps the whole table's ln V + 4
    with pytest.raises(VocabCTCInputError, match=r"transcript ids \[4\] are not among"):
        vocab_ctc_loss(x, mask, vocab, ids, candidates=torch.tensor([7, 1]))
    with pytest.raises(VocabCTCInputError, match="distinct"):
        vocab_ctc_loss(x, mask, vocab, ids, candidates=torch.tensor([7, 7, 1, 4]))
