r"""Differentiable soft-DTW over a cost tensor, on CPU (numba) and GPU (Triton, or a torch wavefront).

Soft-DTW (Cuturi & Blondel, ICML 2017) of a cost matrix :math:`D \in \mathbb{R}^{L \times S}` is the last cell of

.. math::

    R_{0,0} = 0,\quad R_{i,0} = R_{0,j} = +\infty,\qquad
    R_{i,j} = D_{i,j} + \operatorname{softmin}_\gamma(R_{i-1,j},\, R_{i,j-1},\, R_{i-1,j-1}),

    \operatorname{softmin}_\gamma(a) = -\gamma \log \textstyle\sum_k e^{-a_k/\gamma}
    = \min_k a_k - \gamma \log \sum_k e^{-(a_k - \min a)/\gamma},

i.e. :math:`R_{L,S}` (1-based), a smoothed minimum over all monotone alignment paths of the summed cost; as
:math:`\gamma \to 0` it becomes DTW. Its gradient :math:`E = \partial R_{L,S} / \partial D` is the expected
alignment, computed backwards with the softmin weights :math:`w` that the forward pass already evaluated
(:math:`w^{\uparrow}_{i,j} = e^{(R_{i,j} - D_{i,j} - R_{i-1,j})/\gamma}`, and likewise for left and diagonal):

.. math::

    E_{L,S} = 1,\qquad E_{i,j} = E_{i+1,j}\, w^{\uparrow}_{i+1,j} + E_{i,j+1}\, w^{\leftarrow}_{i,j+1}
    + E_{i+1,j+1}\, w^{\nwarrow}_{i+1,j+1}.

Cost O(B L S) time; the backward keeps three weights per cell (3 B L S floats). Backends: numba kernels on the
CPU (float32 vectorised over anti-diagonal lanes and parallel over the batch and column tiles, float64 exact),
a Triton kernel for CUDA tensors when Triton imports, otherwise a torch anti-diagonal wavefront (any device,
any length). Non-finite costs are not supported: use a large finite cost to forbid a cell.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..errors import LyraError

__all__ = ["SoftDTWInputError", "soft_dtw"]

_BACKENDS = ("auto", "numba", "triton", "wavefront")


class SoftDTWInputError(LyraError, ValueError):
    """soft-DTW or LCMR received an input of the wrong shape, dtype or range."""


def soft_dtw(
    cost: Tensor,
    gamma: float = 0.1,
    lengths: Tensor | Sequence[Sequence[int]] | tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Soft-DTW value of every sample of a batch of cost matrices (differentiable).

    Args:
        cost: (B, L, S) floating tensor, ``cost[b, l, s]`` the cost of aligning step ``l`` of one sequence with
            step ``s`` of the other. float32 and float64 are computed in their own precision, other float dtypes
            in float32. Entries must be finite.
        gamma: smoothing in [1e-30, 1e20] (the formulas are in the module docstring); smaller is closer to DTW.
        lengths: optional valid lengths per sample: a (B, 2) integer tensor of (rows, columns), or a pair of
            (B,) tensors ``(len_l, len_s)``. Sample ``b`` then uses ``cost[b, :len_l, :len_s]``; the value is
            ``R[len_l, len_s]`` and the gradient is exactly zero outside that block. ``None`` = full (L, S).

    Returns:
        (B,) tensor in ``cost.dtype``: the soft-DTW value of each sample.

    Raises:
        SoftDTWInputError: ``cost`` is not a 3-d floating tensor, ``gamma`` is not a number in that range, or
            ``lengths`` has the wrong shape or a value outside [1, L] / [1, S].
    """
    return _soft_dtw(cost, gamma, lengths)


def _soft_dtw(cost: Tensor, gamma: float, lengths, backend: str = "auto") -> Tensor:
    """:func:`soft_dtw` with an explicit backend (``auto``, ``numba``, ``triton`` or ``wavefront``)."""
    gamma = _check_gamma(gamma)
    _check_cost(cost)
    lx, ly = _check_lengths(lengths, cost)
    if backend not in _BACKENDS:
        raise SoftDTWInputError(f"unknown soft-DTW backend {backend!r}; expected one of {', '.join(_BACKENDS)}")
    if cost.shape[0] == 0:
        return cost.sum(dim=(1, 2))
    return _SoftDTW.apply(cost, gamma, lx, ly, _pick_backend(cost, backend))


_GAMMA_RANGE = (1e-30, 1e20)  # 1 / gamma must fit float32, and +inf is a finite 1e30 inside the CPU kernels


def _check_gamma(gamma: float) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
        raise SoftDTWInputError(f"gamma must be a float > 0, got {type(gamma).__name__} {gamma!r}")
    lo, hi = _GAMMA_RANGE
    if not math.isfinite(gamma) or not lo <= gamma <= hi:
        raise SoftDTWInputError(f"gamma must be a float in [{lo:g}, {hi:g}] (> 0), got {gamma!r}")
    return float(gamma)


def _check_cost(cost: Tensor) -> None:
    if not isinstance(cost, Tensor):
        raise SoftDTWInputError(f"cost must be a torch.Tensor of shape (B, L, S), got {type(cost).__name__}")
    if cost.ndim != 3:
        hint = " (add a batch dimension with cost.unsqueeze(0))" if cost.ndim == 2 else ""
        raise SoftDTWInputError(f"cost must have shape (B, L, S), got {cost.ndim}-d shape {tuple(cost.shape)}{hint}")
    if not cost.is_floating_point():
        raise SoftDTWInputError(f"cost must be a floating tensor, got dtype {cost.dtype}")
    if cost.shape[1] == 0 or cost.shape[2] == 0:
        raise SoftDTWInputError(f"cost must have L >= 1 and S >= 1, got shape {tuple(cost.shape)}")


def _check_lengths(lengths, cost: Tensor) -> tuple[Tensor, Tensor]:
    """Validated (len_l, len_s) as int64 CPU tensors of shape (B,)."""
    B, L, S = cost.shape
    if lengths is None:
        return torch.full((B,), L, dtype=torch.int64), torch.full((B,), S, dtype=torch.int64)
    if isinstance(lengths, (tuple, list)) and len(lengths) == 2 and all(
        isinstance(x, Tensor) and x.ndim == 1 for x in lengths
    ):
        pair = [x.detach().cpu() for x in lengths]
        if any(x.is_floating_point() or x.is_complex() or x.dtype == torch.bool for x in pair):
            raise SoftDTWInputError("lengths must hold integers, got a pair of non-integer tensors")
        if any(x.shape[0] != B for x in pair):
            got = [tuple(x.shape) for x in pair]
            raise SoftDTWInputError(f"lengths must be two tensors of shape ({B},), got {got}")
        lx, ly = (x.to(torch.int64) for x in pair)
    else:
        t = lengths.detach().cpu() if isinstance(lengths, Tensor) else torch.as_tensor(lengths)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise SoftDTWInputError(f"lengths must hold integers, got dtype {t.dtype}")
        if tuple(t.shape) != (B, 2):
            raise SoftDTWInputError(
                f"lengths must have shape ({B}, 2) = (len_l, len_s) per sample, got {tuple(t.shape)}")
        lx, ly = t[:, 0].to(torch.int64), t[:, 1].to(torch.int64)
    for name, x, hi in (("len_l", lx, L), ("len_s", ly, S)):
        bad = ((x < 1) | (x > hi)).nonzero().flatten()
        if len(bad):
            b = int(bad[0])
            raise SoftDTWInputError(f"lengths: {name} of sample {b} is {int(x[b])}, expected 1 <= {name} <= {hi}")
    return lx.contiguous(), ly.contiguous()


def _pick_backend(cost: Tensor, backend: str) -> str:
    if backend != "auto":
        if backend == "numba" and cost.device.type != "cpu":
            raise SoftDTWInputError(f"the numba backend runs on CPU tensors, got a tensor on {cost.device}")
        if backend == "triton" and cost.device.type != "cuda" and not _triton_interpreted():
            raise SoftDTWInputError(f"the triton backend runs on CUDA tensors, got a tensor on {cost.device}")
        return backend
    if cost.device.type == "cpu":
        return "numba"
    if cost.device.type == "cuda" and _triton_available():
        return "triton"
    return "wavefront"


def _triton_available() -> bool:
    try:
        from . import _soft_dtw_triton  # noqa: F401
    except ImportError:
        return False
    return True


def _triton_interpreted() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET") == "1" and _triton_available()


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class _SoftDTW(torch.autograd.Function):
    """Forward stores the softmin weights; backward runs the E recursion with them (no autograd per cell)."""

    @staticmethod
    def forward(ctx, cost: Tensor, gamma: float, lx: Tensor, ly: Tensor, backend: str) -> Tensor:
        need_w = ctx.needs_input_grad[0]
        D = cost.detach().to(_compute_dtype(cost.dtype))
        B, L, S = D.shape
        # soft-DTW is symmetric under transposition; every backend prefers the rows to be the shorter side
        transposed = L > S
        if transposed:
            D, lx, ly = D.transpose(1, 2), ly, lx
        D = D.contiguous()
        if backend == "numba":
            from . import _soft_dtw_cpu as kernels

            values, state = kernels.forward(D, lx, ly, gamma, need_w)
        elif backend == "triton":
            from . import _soft_dtw_triton as kernels

            values, state = kernels.forward(D, lx.to(D.device), ly.to(D.device), gamma, need_w)
        else:
            from . import _soft_dtw_wavefront as kernels

            lx, ly = lx.to(D.device), ly.to(D.device)
            values, state = kernels.forward(D, lx, ly, gamma, need_w)
        ctx.kernels, ctx.state, ctx.lengths, ctx.shape = kernels, state, (lx, ly), D.shape
        ctx.transposed, ctx.in_dtype = transposed, cost.dtype
        return values.to(cost.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        lx, ly = ctx.lengths
        go = grad_out.detach().to(_compute_dtype(ctx.in_dtype)).contiguous()
        grad = ctx.kernels.backward(go, lx, ly, ctx.shape, ctx.state)
        if ctx.transposed:
            grad = grad.transpose(1, 2)
        return grad.to(ctx.in_dtype), None, None, None, None
