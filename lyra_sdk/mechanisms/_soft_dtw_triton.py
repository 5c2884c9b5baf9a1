"""Triton kernels of soft-DTW for CUDA tensors: one program per sample sweeping its anti-diagonals.

Importing this module fails with ImportError when Triton is missing; the dispatcher then uses the torch
wavefront. A program walks the diagonals ``d' = i' + j'`` of its own sample only up to ``len_l + len_s``; the
cells of one diagonal are spread over the program's lanes (in chunks of ``BLOCK`` for any length, so there is no
1024 limit) and a barrier separates diagonals. Buffers use the skewed layout of
:mod:`lyra_sdk.mechanisms._soft_dtw_wavefront` (``X[b, d', i']``), so the three predecessors of a diagonal are
contiguous loads. The forward stores the softmin weights and the backward runs the E recursion with them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import _soft_dtw_wavefront as wavefront


@triton.jit
def _fwd_kernel(Ds, R, Wu, Wl, Wd, LX, LY, OUT, GAMMA, sd_b, sd_d, sr_b, sr_d, sw_b, sw_d,
                NEED_W: tl.constexpr, BLOCK: tl.constexpr):  # pragma: no cover - runs on the GPU
    b = tl.program_id(0)
    n = tl.load(LX + b).to(tl.int32)
    m = tl.load(LY + b).to(tl.int32)
    gamma = tl.load(GAMMA)  # a tensor in the cost's dtype: a float argument would be rounded to float32
    inv_g = 1.0 / gamma
    Rb = R + b * sr_b
    Db = Ds + b * sd_b
    lanes = tl.arange(0, BLOCK)
    for dp in range(2, n + m + 1):
        lo = tl.maximum(dp - m, 1)
        hi = tl.minimum(dp - 1, n)
        for start in range(lo, hi + 1, BLOCK):
            i = start + lanes
            mask = i <= hi
            up = tl.load(Rb + (dp - 1) * sr_d + i - 1, mask=mask, other=0.0)
            left = tl.load(Rb + (dp - 1) * sr_d + i, mask=mask, other=0.0)
            dg = tl.load(Rb + (dp - 2) * sr_d + i - 1, mask=mask, other=0.0)
            mn = tl.minimum(tl.minimum(up, left), dg)
            eu = tl.exp((mn - up) * inv_g)
            el = tl.exp((mn - left) * inv_g)
            ed = tl.exp((mn - dg) * inv_g)
            s = eu + el + ed
            d = tl.load(Db + (dp - 2) * sd_d + i - 1, mask=mask, other=0.0)
            tl.store(Rb + dp * sr_d + i, d + mn - gamma * tl.log(s), mask=mask)
            if NEED_W:
                inv = 1.0 / s
                w_off = b * sw_b + dp * sw_d + i
                tl.store(Wu + w_off, eu * inv, mask=mask)
                tl.store(Wl + w_off, el * inv, mask=mask)
                tl.store(Wd + w_off, ed * inv, mask=mask)
        tl.debug_barrier()  # the next diagonal reads what the other lanes just wrote
    tl.store(OUT + b, tl.load(Rb + (n + m) * sr_d + n))


@triton.jit
def _bwd_kernel(E, Wu, Wl, Wd, LX, LY, se_b, se_d, sw_b, sw_d, BLOCK: tl.constexpr):  # pragma: no cover
    b = tl.program_id(0)
    n = tl.load(LX + b).to(tl.int32)
    m = tl.load(LY + b).to(tl.int32)
    Eb = E + b * se_b
    Wub = Wu + b * sw_b
    Wlb = Wl + b * sw_b
    Wdb = Wd + b * sw_b
    lanes = tl.arange(0, BLOCK)
    for k in range(0, n + m - 2):  # diagonals n + m - 1 down to 2; the seed E'(n, m) = go is already in place
        dp = n + m - 1 - k
        lo = tl.maximum(dp - m, 1)
        hi = tl.minimum(dp - 1, n)
        for start in range(lo, hi + 1, BLOCK):
            i = start + lanes
            mask = i <= hi
            e = (tl.load(Eb + (dp + 1) * se_d + i + 1, mask=mask, other=0.0)
                 * tl.load(Wub + (dp + 1) * sw_d + i + 1, mask=mask, other=0.0)
                 + tl.load(Eb + (dp + 1) * se_d + i, mask=mask, other=0.0)
                 * tl.load(Wlb + (dp + 1) * sw_d + i, mask=mask, other=0.0)
                 + tl.load(Eb + (dp + 2) * se_d + i + 1, mask=mask, other=0.0)
                 * tl.load(Wdb + (dp + 2) * sw_d + i + 1, mask=mask, other=0.0))
            tl.store(Eb + dp * se_d + i, e, mask=mask)
        tl.debug_barrier()


def _block(rows: int) -> tuple[int, int]:
    block = min(1024, triton.next_power_of_2(max(rows, 32)))
    return block, max(1, min(8, block // 128))


def forward(D: Tensor, lx: Tensor, ly: Tensor, gamma: float, need_w: bool) -> tuple[Tensor, tuple]:
    """Values (B,) of the contiguous cost ``D`` (B, L, S), L <= S, and the weights for the backward."""
    B, L, S = D.shape
    nd = L + S + 1
    Ds = wavefront.skew(D).contiguous()
    R = D.new_full((B, nd, L + 1), float("inf"))
    R[:, 0, 0] = 0.0
    shape = (B, nd + 2, L + 2) if need_w else (1, 1, 1)
    Wu, Wl, Wd = (D.new_zeros(shape) for _ in range(3))
    out = D.new_empty(B)
    block, warps = _block(L)
    _fwd_kernel[(B,)](Ds, R, Wu, Wl, Wd, lx, ly, out, D.new_full((1,), gamma), Ds.stride(0), Ds.stride(1),
                      R.stride(0), R.stride(1), Wu.stride(0), Wu.stride(1), NEED_W=need_w, BLOCK=block,
                      num_warps=warps)
    return out, (Wu, Wl, Wd)


def backward(go: Tensor, lx: Tensor, ly: Tensor, shape: tuple[int, int, int], W: tuple[Tensor, ...]) -> Tensor:
    """The gradient (B, L, S) of ``sum(go * values)``; zero outside each sample's lengths."""
    B, L, S = shape
    Wu, Wl, Wd = W
    nd = L + S + 1
    E = go.new_zeros((B, nd + 2, L + 2))
    E[torch.arange(B, device=go.device), lx + ly, lx] = go
    block, warps = _block(L)
    _bwd_kernel[(B,)](E, Wu, Wl, Wd, lx, ly, E.stride(0), E.stride(1), Wu.stride(0), Wu.stride(1),
                      BLOCK=block, num_warps=warps)
    return wavefront.unskew(E[:, 2:nd, 1 : L + 1], S)
