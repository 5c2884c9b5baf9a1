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
