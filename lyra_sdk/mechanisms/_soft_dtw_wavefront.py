"""Soft-DTW as an anti-diagonal wavefront of plain torch ops: runs on any device, for any length.

The fallback of :func:`lyra_sdk.mechanisms.soft_dtw.soft_dtw` for accelerators without Triton, and the independent
reference the tests compare the compiled kernels with. Cells of one anti-diagonal ``d' = i' + j'`` do not depend
on each other, so each step updates a whole diagonal of every sample at once; both passes are explicit (no
autograd through the cells). Diagonals are stored skewed, ``X[b, d', i'] = X'(i', d' - i')`` in the 1-based
padded grid (``R'(0, 0) = 0``, the rest of row and column 0 is +inf), so predecessors are shifted slices.
The rows are the shorter side (the caller transposes), which keeps the skewed buffers at (L + S) x min(L, S).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def skew(x: Tensor) -> Tensor:
    """(B, L, S) -> (B, L + S - 1, L) with ``out[b, i + j, i] = x[b, i, j]`` and zeros elsewhere."""
    B, L, S = x.shape
    flat = F.pad(x, (0, L)).reshape(B, L * (S + L))[:, : L * (S + L - 1)]
    return flat.reshape(B, L, S + L - 1).transpose(1, 2)


def unskew(xs: Tensor, S: int) -> Tensor:
    """Inverse of :func:`skew`: (B, L + S - 1, L) -> (B, L, S)."""
    B, _, L = xs.shape
    flat = xs.transpose(1, 2).reshape(B, L * (S + L - 1))
    return F.pad(flat, (0, L)).reshape(B, L, S + L)[:, :, :S]


def forward(D: Tensor, lx: Tensor, ly: Tensor, gamma: float, need_w: bool) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Values R[lx - 1, ly - 1] (B,) and, if ``need_w``, the skewed softmin weights (Wu, Wl, Wd).

    ``D`` (B, L, S) with L <= S; ``lx``, ``ly`` (B,) int64 on D's device.
    """
    B, L, S = D.shape
    nd = L + S + 1
    Ds = skew(D)  # Ds[b, d, i] = D[b, i, d - i], d = d' - 2 and i = i' - 1
    R = D.new_full((B, nd, L + 1), float("inf"))
    R[:, 0, 0] = 0.0
    Wu = Wl = Wd = D.new_zeros(0)
    if need_w:
        Wu, Wl, Wd = (D.new_zeros((B, nd + 2, L + 2)) for _ in range(3))
    inv_g = 1.0 / gamma
    for dp in range(2, nd):
        lo, hi = max(1, dp - S), min(L, dp - 1)  # rows i' of the cells on this diagonal
        up = R[:, dp - 1, lo - 1 : hi]
        left = R[:, dp - 1, lo : hi + 1]
        dg = R[:, dp - 2, lo - 1 : hi]
        mn = torch.minimum(torch.minimum(up, left), dg)  # finite: every cell has a finite predecessor
        eu, el, ed = (((mn - x) * inv_g).exp_() for x in (up, left, dg))
        s = eu + el + ed
        R[:, dp, lo : hi + 1] = Ds[:, dp - 2, lo - 1 : hi] + mn - gamma * s.log()
        if need_w:
            inv = s.reciprocal_()
            Wu[:, dp, lo : hi + 1] = eu * inv
            Wl[:, dp, lo : hi + 1] = el * inv
            Wd[:, dp, lo : hi + 1] = ed * inv
    ar = torch.arange(B, device=D.device)
    return R[ar, lx + ly, lx], (Wu, Wl, Wd)


def backward(go: Tensor, lx: Tensor, ly: Tensor, shape: tuple[int, int, int], W: tuple[Tensor, ...]) -> Tensor:
    """dvalue / dD times ``go`` (B,) as (B, L, S); zero outside each sample's lengths.

    E'(i', j') = E'(i'+1, j') Wu(i'+1, j') + E'(i', j'+1) Wl(i', j'+1) + E'(i'+1, j'+1) Wd(i'+1, j'+1), seeded
    with E'(lx, ly) = go. Cells past a sample's lengths are never reached from the seed, so they stay 0.
    """
    B, L, S = shape
    Wu, Wl, Wd = W
    nd = L + S + 1
    E = go.new_zeros((B, nd + 2, L + 2))
    ar = torch.arange(B, device=go.device)
    E[ar, lx + ly, lx] = go
    for dp in range(nd - 1, 1, -1):
        lo, hi = max(1, dp - S), min(L, dp - 1)
        E[:, dp, lo : hi + 1] += (
            E[:, dp + 1, lo + 1 : hi + 2] * Wu[:, dp + 1, lo + 1 : hi + 2]
            + E[:, dp + 1, lo : hi + 1] * Wl[:, dp + 1, lo : hi + 1]
            + E[:, dp + 2, lo + 1 : hi + 2] * Wd[:, dp + 2, lo + 1 : hi + 2]
        )
    return unskew(E[:, 2 : nd, 1 : L + 1], S)
