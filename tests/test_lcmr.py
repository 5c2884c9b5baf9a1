"""lcmr_loss: equals a hand-computed version; masking, samples without transcript, gradients, options, errors."""

from __future__ import annotations

import pydantic
import pytest
import torch

from lyra_sdk.mechanisms import LCMROptions, SoftDTWInputError, lcmr_loss


def naive_soft_dtw(D: torch.Tensor, gamma: float) -> torch.Tensor:
    """The textbook soft-DTW recursion over one (L, S) cost, one autograd node per cell."""
    L, S = D.shape
    inf = D.new_tensor(float("inf"))
    R = [[inf] * (S + 1) for _ in range(L + 1)]
    R[0][0] = D.new_zeros(())
    for i in range(1, L + 1):
        for j in range(1, S + 1):
            prev = torch.stack([R[i - 1][j], R[i][j - 1], R[i - 1][j - 1]])
            R[i][j] = D[i - 1, j - 1] - gamma * torch.logsumexp(-prev / gamma, 0)
    return R[L][S]


def make_batch(seed: int = 0, B: int = 3, L: int = 9, S: int = 6, d: int = 8):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, d, generator=gen, dtype=torch.float64) * 0.3
    y = torch.randn(B, S, d, generator=gen, dtype=torch.float64) * 0.3
    len_l = torch.tensor([L, 5, 7][:B])
    len_s = torch.tensor([S, 3, 2][:B])
    x_mask = torch.arange(L)[None, :] < len_l[:, None]
    y_mask = torch.arange(S)[None, :] < len_s[:, None]
    return x, x_mask, y, y_mask


def by_hand(x, x_mask, y, y_mask, keep, tau=0.06, gamma=0.1, normalize="L"):
    """One sample at a time: the valid tokens, an explicit (L, S) cost and the per-cell soft-DTW."""
    losses = []
    for b in range(x.shape[0]):
        if not keep[b]:
            continue
        xb, yb = x[b][x_mask[b]].double(), y[b][y_mask[b]].double()
        cost = torch.empty(len(xb), len(yb), dtype=torch.float64)
        for l_idx in range(len(xb)):
            logits = torch.stack([xb[l_idx] @ yb[s] / tau for s in range(len(yb))])
            cost[l_idx] = -(logits - torch.logsumexp(logits, 0))
        n = len(xb) if normalize == "L" else len(xb) + len(yb)
        losses.append(naive_soft_dtw(cost, gamma) / n)
    return torch.stack(losses).mean()


@pytest.mark.parametrize("normalize", ["L", "L+S"])
def test_equals_hand_computed(normalize):
    x, xm, y, ym = make_batch()
    got = lcmr_loss(x, xm, y, ym, normalize=normalize)
    want = by_hand(x, xm, y, ym, [True] * 3, normalize=normalize)
    assert got.dtype == torch.float32 and got.ndim == 0
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    custom = lcmr_loss(x, xm, y, ym, temperature=0.5, gamma=0.3, normalize=normalize)
    assert custom.item() == pytest.approx(by_hand(x, xm, y, ym, [True] * 3, 0.5, 0.3, normalize).item(), rel=1e-5)


def test_padding_content_and_mask_layout_do_not_matter():
    x, xm, y, ym = make_batch(1)
    base = lcmr_loss(x, xm, y, ym)
    noisy_x = torch.where(xm[..., None], x, torch.full_like(x, float("nan")))
    noisy_y = torch.where(ym[..., None], y, torch.full_like(y, 1e4))
    assert lcmr_loss(noisy_x, xm, noisy_y, ym).item() == pytest.approx(base.item(), rel=1e-6)
    # left padding: the valid tokens at the end of each row, same order
    flip_x, flip_xm = torch.zeros_like(x), torch.zeros_like(xm)
    for b in range(x.shape[0]):
        n = int(xm[b].sum())
        flip_x[b, x.shape[1] - n :] = x[b, :n]
        flip_xm[b, x.shape[1] - n :] = True
    assert lcmr_loss(flip_x, flip_xm, y, ym).item() == pytest.approx(base.item(), rel=1e-6)


def test_samples_without_transcript_contribute_nothing():
    x, xm, y, ym = make_batch(2)
    x = x.float().requires_grad_(True)
    has = torch.tensor([True, False, True])
    loss = lcmr_loss(x, xm, y.float(), ym, has_transcript=has)
    assert loss.item() == pytest.approx(by_hand(x.detach(), xm, y, ym, has.tolist()).item(), rel=1e-5)
    loss.backward()
    assert torch.count_nonzero(x.grad[1]) == 0 and torch.count_nonzero(x.grad[0]) > 0
    # an empty transcript counts as none
    ym_empty = ym.clone()
    ym_empty[0] = False
    only_2 = lcmr_loss(x, xm, y.float(), ym_empty, has_transcript=has)
    assert only_2.item() == pytest.approx(by_hand(x.detach(), xm, y, ym, [False, False, True]).item(), rel=1e-5)


def test_no_sample_with_transcript_gives_zero_with_graph():
    x, xm, y, ym = make_batch(3)
    x = x.float().requires_grad_(True)
    loss = lcmr_loss(x, xm, y.float(), ym, has_transcript=torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad and loss.dtype == torch.float32
    loss.backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) == 0


def test_gradient_flows_to_speech_tokens_and_text():
    x, xm, y, ym = make_batch(4)
    x = x.to(torch.bfloat16).requires_grad_(True)
    y = y.to(torch.bfloat16).requires_grad_(True)
    loss = lcmr_loss(x, xm, y, ym)
    assert loss.dtype == torch.float32
    loss.backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()
    assert torch.count_nonzero(x.grad[xm]) > 0 and torch.count_nonzero(x.grad[~xm]) == 0
    assert torch.count_nonzero(y.grad[ym]) > 0 and torch.count_nonzero(y.grad[~ym]) == 0


def test_aligned_pairs_cost_less_than_shuffled():
    gen = torch.Generator().manual_seed(5)
    y = torch.randn(1, 6, 16, generator=gen)
    x = y.repeat_interleave(3, dim=1) * 2  # each text token spoken as three speech tokens
    xm, ym = torch.ones(1, 18, dtype=torch.bool), torch.ones(1, 6, dtype=torch.bool)
    aligned = lcmr_loss(x, xm, y, ym)
    shuffled = lcmr_loss(x[:, torch.randperm(18, generator=gen)], xm, y, ym)
    assert aligned.item() < 0.1 < shuffled.item()


def test_options_model():
    opts = LCMROptions()
    assert (opts.weight, opts.temperature, opts.gamma, opts.normalize) == (0.5, 0.06, 0.1, "L")
    assert LCMROptions(normalize="L+S", weight=0).normalize == "L+S"
    with pytest.raises(pydantic.ValidationError):
        LCMROptions(tau=0.1)
    with pytest.raises(pydantic.ValidationError):
        LCMROptions(temperature=0)
    with pytest.raises(pydantic.ValidationError):
        LCMROptions(normalize="S")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"speech_mask": "float"}, "speech_mask must be a bool tensor of shape \\(3, 9\\)"),
        ({"text_mask": "short"}, "text_mask must be a bool tensor of shape \\(3, 6\\)"),
        ({"text_embeds": "wrong_d"}, "text_embeds must be \\(3, S, 8\\)"),
        ({"speech_tokens": "2d"}, "must be \\(B, L, d\\)"),
        ({"has_transcript": "int"}, "has_transcript must be a bool tensor of shape \\(3,\\)"),
        ({"temperature": 0.0}, "temperature"),
        ({"gamma": -0.1}, "gamma"),
        ({"normalize": "S"}, "normalize must be one of L, L\\+S"),
    ],
)
def test_invalid_inputs_raise(change, match):
    x, xm, y, ym = make_batch()
    args = {"speech_tokens": x, "speech_mask": xm, "text_embeds": y, "text_mask": ym}
    broken = {"float": xm.float(), "short": ym[:, :3], "wrong_d": y[..., :4], "2d": x[0],
              "int": torch.ones(3, dtype=torch.int64)}
    for key, value in change.items():
        args[key] = broken.get(value, value) if isinstance(value, str) and key != "normalize" else value
    with pytest.raises(SoftDTWInputError, match=match):
        lcmr_loss(**args)


# ---------------------------------------------------------------- softmax over the vocabulary (SDK extension)

def vocab_by_hand(x, x_mask, ids, y_mask, vocab, tau=0.06, gamma=0.1):
    """Cost -log softmax over every vocabulary row, read at the transcript's ids, then the per-cell soft-DTW."""
    losses = []
    for b in range(x.shape[0]):
        xb, ib = x[b][x_mask[b]].double(), ids[b][y_mask[b]]
        cost = torch.stack([-(torch.log_softmax(xb[l_idx] @ vocab.double().T / tau, 0)[ib]) for l_idx in range(len(xb))])
        losses.append(naive_soft_dtw(cost, gamma) / len(xb))
    return torch.stack(losses).mean()


def vocab_batch(seed=0, V=11):
    x, xm, _, ym = make_batch(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    vocab = torch.randn(V, x.shape[2], generator=gen, dtype=torch.float64) * 0.3
    ids = torch.randint(0, V, ym.shape, generator=gen)
    return x, xm, vocab[ids], ym, vocab, ids


def test_vocabulary_softmax_equals_hand_computed_and_differs_from_lyra():
    x, xm, y, ym, vocab, ids = vocab_batch()
    got = lcmr_loss(x, xm, y, ym, vocab_embeds=vocab, text_ids=ids)
    assert got.item() == pytest.approx(vocab_by_hand(x, xm, ids, ym, vocab).item(), rel=1e-5)
    assert got.item() > lcmr_loss(x, xm, y, ym).item()  # V candidates instead of S: a harder softmax


def test_vocabulary_softmax_prefers_tokens_that_look_like_their_word():
    vocab = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(0)))[0]  # orthonormal rows
    ids = torch.tensor([[3, 1, 6, 0]])
    y, ym = vocab[ids], torch.ones(1, 4, dtype=torch.bool)
    speech = y.repeat_interleave(2, dim=1)  # each word piece heard twice
    sm = torch.ones(1, 8, dtype=torch.bool)
    aligned = lcmr_loss(speech, sm, y, ym, vocab_embeds=vocab, text_ids=ids)
    other = lcmr_loss(vocab[torch.tensor([[2, 2, 5, 5, 7, 7, 4, 4]])], sm, y, ym, vocab_embeds=vocab, text_ids=ids)
    assert aligned.item() < 0.01 and other.item() > 10
    # Lyra's softmax only sees the sentence's 4 tokens: words outside the sentence cost it nothing extra
    assert lcmr_loss(vocab[torch.tensor([[2, 2, 5, 5, 7, 7, 4, 4]])], sm, y, ym).item() < 2


def test_vocabulary_softmax_gradient_reaches_speech_only():
    x, xm, y, ym, vocab, ids = vocab_batch()
    x = x.clone().requires_grad_(True)
    vocab = vocab.clone().requires_grad_(True)
    lcmr_loss(x, xm, y, ym, vocab_embeds=vocab.detach(), text_ids=ids).backward()
    assert x.grad is not None and x.grad[xm].abs().sum() > 0 and x.grad[~xm].abs().sum() == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(text_ids=None), "needs text_ids"),
    (dict(text_ids="ids"), "needs text_ids"),
    (dict(vocab_embeds=torch.zeros(5, 3)), r"vocab_embeds must be a floating \(V, 8\)"),
    (dict(text_ids=torch.full((3, 6), 11)), r"must lie in \[0, 11\)"),
])
def test_vocabulary_softmax_bad_inputs(kwargs, match):
    x, xm, y, ym, vocab, ids = vocab_batch()
    args = dict(vocab_embeds=vocab, text_ids=ids) | kwargs
    with pytest.raises(SoftDTWInputError, match=match):
        lcmr_loss(x, xm, y, ym, **args)


def test_options_model_softmax():
    assert LCMROptions().softmax == "transcript"
    assert LCMROptions(softmax="vocabulary").softmax == "vocabulary"
    with pytest.raises(pydantic.ValidationError):
        LCMROptions(softmax="words")
