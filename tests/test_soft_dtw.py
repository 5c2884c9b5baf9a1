"""soft_dtw: value and gradient against a per-cell autograd reference, lengths, long sequences, errors.

Tolerances: float64 agrees with the reference to 1e-9 (values) and 1e-9 (gradients); float32 to 1e-5 relative
(values) and 2e-5 absolute (gradients, which are alignment probabilities in [0, 1]) on small shapes. At
L = 3000 the float32 value agrees to 1e-5 relative and the gradient to 5e-3 absolute: R reaches ~1e3 there and
its float32 rounding (~6e-5) divided by gamma = 0.1 perturbs the softmin weights by ~1e-3.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import lyra_sdk.mechanisms._soft_dtw_cpu as cpu_kernels
from lyra_sdk.errors import LyraError
from lyra_sdk.mechanisms import SoftDTWInputError, soft_dtw
from lyra_sdk.mechanisms.soft_dtw import _soft_dtw


def naive_soft_dtw(D: torch.Tensor, gamma: float) -> torch.Tensor:
    """The textbook recursion, one autograd node per cell: R[L, S] of one (L, S) cost matrix."""
    L, S = D.shape
    inf = D.new_tensor(float("inf"))
    R = [[inf] * (S + 1) for _ in range(L + 1)]
    R[0][0] = D.new_zeros(())
    for i in range(1, L + 1):
        for j in range(1, S + 1):
            prev = torch.stack([R[i - 1][j], R[i][j - 1], R[i - 1][j - 1]])
            R[i][j] = D[i - 1, j - 1] - gamma * torch.logsumexp(-prev / gamma, 0)
    return R[L][S]


def hard_dtw(D: np.ndarray) -> float:
    L, S = D.shape
    R = np.full((L + 1, S + 1), np.inf)
    R[0, 0] = 0.0
    for i in range(1, L + 1):
        for j in range(1, S + 1):
            R[i, j] = D[i - 1, j - 1] + min(R[i - 1, j], R[i, j - 1], R[i - 1, j - 1])
    return float(R[L, S])


def value_and_grad(cost: torch.Tensor, gamma: float = 0.1, lengths=None, backend: str = "auto", weights=None):
    c = cost.detach().clone().requires_grad_(True)
    v = _soft_dtw(c, gamma, lengths, backend)
    w = torch.arange(1, c.shape[0] + 1, dtype=v.dtype) if weights is None else weights
    (g,) = torch.autograd.grad((v * w).sum(), c)
    return v.detach(), g


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 1, 6), (2, 7, 1), (3, 5, 7), (2, 9, 4), (1, 12, 12)])
def test_matches_naive_reference(shape, dtype):
    gen = torch.Generator().manual_seed(sum(shape))
    cost = torch.rand(shape, generator=gen, dtype=torch.float64) * 3
    v, g = value_and_grad(cost.to(dtype), gamma=0.3)
    for b in range(shape[0]):
        d = cost[b].clone().requires_grad_(True)
        ref = naive_soft_dtw(d, 0.3)
        (ref_g,) = torch.autograd.grad(ref * (b + 1), d)
        if dtype == torch.float64:
            assert v[b].item() == pytest.approx(ref.item(), rel=1e-9, abs=1e-9)
            torch.testing.assert_close(g[b], ref_g, rtol=0, atol=1e-9)
        else:
            assert v[b].item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-5)
            torch.testing.assert_close(g[b].double(), ref_g, rtol=0, atol=2e-5 * (b + 1))
    assert v.dtype == dtype and g.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_variable_lengths_equal_cropped_samples_and_zero_padding_grad(dtype):
    gen = torch.Generator().manual_seed(1)
    B, L, S = 5, 37, 23
    cost = torch.rand(B, L, S, generator=gen, dtype=torch.float64).to(dtype)
    lengths = torch.tensor([[37, 23], [1, 1], [20, 23], [37, 5], [11, 17]])
    v, g = value_and_grad(cost, 0.1, lengths)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    for b, (n, m) in enumerate(lengths.tolist()):
        vb, gb = value_and_grad(cost[b : b + 1, :n, :m], 0.1, weights=torch.tensor([float(b + 1)], dtype=dtype))
        assert v[b].item() == pytest.approx(vb.item(), rel=tol, abs=tol)
        torch.testing.assert_close(g[b, :n, :m], gb[0], rtol=0, atol=tol)
        assert torch.count_nonzero(g[b, n:, :]) == 0 and torch.count_nonzero(g[b, :, m:]) == 0
    # the same lengths given as a pair of (B,) tensors
    v2 = soft_dtw(cost, 0.1, (lengths[:, 0], lengths[:, 1]))
    torch.testing.assert_close(v2, v, rtol=0, atol=0)


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(2)
    cost = torch.rand(3, 4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([[4, 6], [2, 5], [3, 1]])
    assert torch.autograd.gradcheck(lambda c: soft_dtw(c, 0.2, lengths), (cost,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", ["numba", "wavefront"])
def test_directional_finite_difference(backend):
    gen = torch.Generator().manual_seed(3)
    cost = torch.rand(2, 40, 30, generator=gen, dtype=torch.float64)
    direction = torch.randn(cost.shape, generator=gen, dtype=torch.float64)
    _, g = value_and_grad(cost, 0.1, backend=backend, weights=torch.ones(2, dtype=torch.float64))
    eps = 1e-5
    plus = _soft_dtw(cost + eps * direction, 0.1, None, backend).sum()
    minus = _soft_dtw(cost - eps * direction, 0.1, None, backend).sum()
    fd = (plus - minus).item() / (2 * eps)
    assert (g * direction).sum().item() == pytest.approx(fd, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("ntj", [2, 3])
def test_column_tile_pipeline_matches_wavefront_backend(monkeypatch, ntj):
    """The B < threads path (>= 4 threads): column tiles run as a pipeline of one-strip row blocks (forced)."""
    monkeypatch.setattr(cpu_kernels, "_tiling", lambda B, cols, rows, nthreads: (ntj, 1))
    gen = torch.Generator().manual_seed(4)
    cost = torch.rand(4, 75, 190, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([[75, 190], [70, 100], [33, 150], [40, 5]])
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        v, g = value_and_grad(cost.to(dtype), 0.1, lengths, backend="numba")
        rv, rg = value_and_grad(cost, 0.1, lengths, backend="wavefront")
        torch.testing.assert_close(v.double(), rv, rtol=tol, atol=tol)
        torch.testing.assert_close(g.double(), rg, rtol=0, atol=tol)


def test_long_sequences_match_torch_wavefront():
    gen = torch.Generator().manual_seed(5)
    cost = torch.rand(2, 3000, 300, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([[3000, 300], [2500, 180]])
    rv, rg = value_and_grad(cost, 0.1, lengths, backend="wavefront")
    v, g = value_and_grad(cost.float(), 0.1, lengths)
    assert torch.isfinite(v).all() and torch.isfinite(g).all()
    torch.testing.assert_close(v.double(), rv, rtol=1e-5, atol=0)
    torch.testing.assert_close(g.double(), rg, rtol=0, atol=5e-3)
    assert torch.count_nonzero(g[1, 2500:]) == 0 and torch.count_nonzero(g[1, :, 180:]) == 0
    v64, g64 = value_and_grad(cost, 0.1, lengths)
    torch.testing.assert_close(v64, rv, rtol=1e-12, atol=0)
    torch.testing.assert_close(g64, rg, rtol=0, atol=1e-10)


def test_small_gamma_tends_to_dtw_and_large_gamma_is_finite():
    gen = torch.Generator().manual_seed(6)
    cost = torch.rand(2, 15, 11, generator=gen, dtype=torch.float64)
    for b in range(2):
        dtw = hard_dtw(cost[b].numpy())
        for gamma in (1e-3, 1e-6):
            v = soft_dtw(cost[b : b + 1], gamma).item()
            # softmin_g >= min - g log 3, so dtw - (L + S) g log 3 <= value <= dtw
            assert dtw - (15 + 11) * gamma * math.log(3) - 1e-12 <= v <= dtw + 1e-12
        assert soft_dtw(cost[b : b + 1].float(), 1e-4).item() == pytest.approx(dtw, abs=1e-2)
    assert soft_dtw(cost[:1], np.float32(0.5)).item() == pytest.approx(naive_soft_dtw(cost[0], 0.5).item(), rel=1e-9)
    for gamma in (10.0, 1e4):
        v, g = value_and_grad(cost, gamma)
        ref = naive_soft_dtw(cost[0], gamma)
        assert v[0].item() == pytest.approx(ref.item(), rel=1e-9)
        assert torch.isfinite(g).all()


def test_forward_without_grad_and_other_dtypes():
    gen = torch.Generator().manual_seed(7)
    cost = torch.rand(4, 20, 13, generator=gen)
    with_grad, _ = value_and_grad(cost)
    torch.testing.assert_close(soft_dtw(cost), with_grad, rtol=0, atol=0)
    half = cost.to(torch.bfloat16).requires_grad_(True)
    v = soft_dtw(half)
    v.sum().backward()
    assert v.dtype == torch.bfloat16 and half.grad.dtype == torch.bfloat16
    empty = torch.zeros(0, 3, 4, requires_grad=True)
    out = soft_dtw(empty)
    assert out.shape == (0,) and out.requires_grad


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cost": torch.rand(4, 5)}, "shape \\(B, L, S\\).*unsqueeze"),
        ({"cost": torch.rand(2, 4, 5, 1)}, "4-d"),
        ({"cost": torch.ones(2, 4, 5, dtype=torch.int64)}, "floating"),
        ({"cost": torch.rand(2, 0, 5)}, "L >= 1"),
        ({"cost": [[1.0]]}, "torch.Tensor"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": -1.0}, "gamma"),
        ({"gamma": float("nan")}, "gamma"),
        ({"gamma": float("inf")}, "gamma"),
        ({"gamma": 1e-31}, "gamma must be a float in \\[1e-30, 1e\\+20\\]"),
        ({"gamma": 1e21}, "gamma"),
        ({"gamma": True}, "gamma"),
        ({"gamma": "0.1"}, "gamma"),
        ({"lengths": torch.tensor([[4, 5]])}, "shape \\(2, 2\\)"),
        ({"lengths": torch.tensor([[4, 5], [5, 5]])}, "len_l of sample 1 is 5, expected 1 <= len_l <= 4"),
        ({"lengths": torch.tensor([[4, 5], [4, 0]])}, "len_s of sample 1 is 0"),
        ({"lengths": torch.tensor([[4.0, 5.0], [4.0, 5.0]])}, "integers"),
        ({"lengths": (torch.tensor([4, 4]), torch.tensor([5]))}, "two tensors of shape \\(2,\\)"),
    ],
)
def test_invalid_inputs_raise(kwargs, match):
    args = {"cost": torch.rand(2, 4, 5), "gamma": 0.1, "lengths": None} | kwargs
    with pytest.raises(SoftDTWInputError, match=match) as info:
        soft_dtw(**args)
    assert isinstance(info.value, LyraError)


def test_public_exports():
    import lyra_sdk.mechanisms as mechanisms

    assert mechanisms.soft_dtw is soft_dtw and callable(mechanisms.soft_dtw)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs triton and TRITON_INTERPRET=1 on CPU")
def test_triton_kernel_in_interpreter(monkeypatch):
    triton_kernels = pytest.importorskip("lyra_sdk.mechanisms._soft_dtw_triton")
    monkeypatch.setattr(triton_kernels, "_block", lambda rows: (16, 1))  # several chunks per diagonal
    gen = torch.Generator().manual_seed(8)
    cost = torch.rand(3, 21, 40, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([[21, 40], [10, 33], [21, 7]])
    v, g = value_and_grad(cost, 0.1, lengths, backend="triton")
    rv, rg = value_and_grad(cost, 0.1, lengths, backend="numba")
    torch.testing.assert_close(v, rv, rtol=1e-12, atol=0)
    torch.testing.assert_close(g, rg, rtol=0, atol=1e-12)


def test_numba_is_imported_lazily_and_its_compile_cached_across_processes():
    soft_dtw(torch.rand(1, 3, 2, requires_grad=True)).sum().backward()  # compiled (or loaded) here
    code = (
        "import sys, torch; from lyra_sdk import soft_dtw; print('numba' in sys.modules);"
        "soft_dtw(torch.rand(1, 3, 2, requires_grad=True)).sum().backward();"
        "import lyra_sdk.mechanisms._soft_dtw_cpu as k;"
        "print(sum(k._fwd_batch.stats.cache_misses.values()), sum(k._bwd_batch.stats.cache_misses.values()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["False", "0", "0"], out.stdout + out.stderr


def test_tiling_choice():
    assert cpu_kernels._tiling(8, 300, 64, 2) == (1, 2)  # the batch fills the threads: one tile per sample
    assert cpu_kernels._tiling(1, 3000, 300, 2) == (1, 10)  # too few threads for a pipeline
    assert cpu_kernels._tiling(1, 3000, 300, 4) == (4, 1)  # B = 1: four column tiles in a pipeline
    assert cpu_kernels._tiling(1, 200, 300, 4) == (1, 10)  # too narrow to split
    assert cpu_kernels._tiling(2, 3000, 3000, 16) == (8, 2)
    assert cpu_kernels._tiling(1, 3000, 300, 1) == (1, 10)


@pytest.mark.parametrize("reverse", [False, True])
def test_pipeline_respects_dependencies_and_propagates_errors(reverse):
    finished: list[tuple[int, int]] = []

    def run(r: int, c: int) -> None:
        dep = c + 1 if reverse else c - 1
        assert dep < 0 or dep >= 4 or (r, dep) in finished
        finished.append((r, c))

    cpu_kernels._pipeline(4, 5, run, reverse)
    assert sorted(finished) == [(r, c) for r in range(5) for c in range(4)]

    def broken(r: int, c: int) -> None:
        if (r, c) == (2, 3 if reverse else 0):
            raise RuntimeError("kernel failed")

    with pytest.raises(RuntimeError, match="kernel failed"):
        cpu_kernels._pipeline(4, 5, broken, reverse)
