"""Numba CPU kernels of soft-DTW: forward values with the softmin weights, and the backward E recursion.

Imported on the first CPU call of :func:`lyra_sdk.mechanisms.soft_dtw.soft_dtw` (numba is heavy to import);
compiled once per dtype and cached on disk (``cache=True``), so a second process does not recompile.

Layout. A sample's (L, S) grid is cut into strips of ``V`` rows. A strip is swept as a small systolic array:
at step ``t`` lane ``k`` holds cell ``(i0 + k, j0 + t - k)``, so the ``V`` lanes of a step are independent
(they lie on one anti-diagonal) and the inner loop over lanes vectorises, while the data a step needs sits in
the lanes of the two previous steps. Transcendentals are float32 polynomials (vectorisable, ~3e-8 relative
error) for float32 inputs and libm for float64.

Threads. With at least as many samples as threads, each sample is one tile and the batch runs under numba's
``prange`` (one parallel region per pass; a single sample runs without one). With fewer samples than threads
(and at least 4 threads, see :func:`_tiling`), the columns are cut into ``ntj`` tiles and the rows into blocks
of ``rb`` strips; tile c runs in its own Python thread (the kernels release the GIL), block after block, each
block once tile c - 1 has finished it: a pipeline with point-to-point waits. A wavefront of ``prange``
regions would put a barrier of all threads after every block, and on a busy machine every barrier waits for
the thread the OS paused (measured: 50x slower at 2 threads on 2 busy cores).

Forward stores, per cell, the softmin weights of its three predecessors (``Wu`` up, ``Wl`` left, ``Wd``
diagonal); they sum to 1. The backward needs no exponential: E[i, j] = E[i+1, j] Wu[i+1, j] +
E[i, j+1] Wl[i, j+1] + E[i+1, j+1] Wd[i+1, j+1], which is Cuturi & Blondel's recursion with the exponentials
already evaluated. Weights are kept per (strip, tile) in the skewed step-major layout of the sweep.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload
from torch import Tensor

_BIG = 1e30  # +inf of the padded grid; finite, so no lane ever computes inf - inf
V = 32  # lanes (rows) per strip: two AVX-512 or four AVX2 float32 vectors (a step's latency chains overlap)
_FM = {"nsz", "arcp", "contract", "afn"}  # no nnan/ninf: the kernels rely on min/select semantics

_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_F2 = np.float32(2.0)
_HALF = np.float32(0.5)
_THREE_HALVES = np.float32(1.5)
_LN2 = np.float32(math.log(2.0))
_LOG2E = np.float32(1.0 / math.log(2.0))
_MIN_EXP2 = np.float32(-126.0)
# 2**f on [0, 1): weighted least-squares (near-minimax) fit, max relative error 2.8e-8.
_P0, _P1, _P2 = np.float32(1.000000002), np.float32(0.6931469838), np.float32(0.2402298362)
_P3, _P4, _P5, _P6 = np.float32(0.05548334212), np.float32(0.009678840718), np.float32(0.001243969038), np.float32(
    0.000217022467)
_C3, _C5, _C7, _C9 = np.float32(1 / 3), np.float32(1 / 5), np.float32(1 / 7), np.float32(1 / 9)


@intrinsic
def _exp2i(typingctx, nf):
    """``2.0 ** n`` for a float32 holding an integer ``n`` in [-126, 0], built from the exponent bits."""
    if nf != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        n = builder.fptosi(args[0], i32)
        bits = builder.shl(builder.add(n, ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.float32), codegen


def _exp_nonpos(x):
    """exp(x) for x <= 0 (stub; the numba overload below is the implementation)."""
    return math.exp(x)


def _log_1_3(s):
    """log(s) for s in [1, 3] (stub; the numba overload below is the implementation)."""
    return math.log(s)


@overload(_exp_nonpos, jit_options={"fastmath": _FM, "error_model": "numpy"}, inline="always")
def _ov_exp_nonpos(x):
    if x == types.float32:

        def impl(x):  # 2**y = 2**floor(y) * 2**frac(y); below 2**-126 the value is clamped (it is < 1e-37)
            y = max(x * _LOG2E, _MIN_EXP2)
            nf = np.floor(y)
            f = y - nf
            p = _P0 + f * (_P1 + f * (_P2 + f * (_P3 + f * (_P4 + f * (_P5 + f * _P6)))))
            return p * _exp2i(nf)

        return impl
    return lambda x: math.exp(x)


@overload(_log_1_3, jit_options={"fastmath": _FM, "error_model": "numpy"}, inline="always")
def _ov_log_1_3(s):
    if s == types.float32:

        def impl(s):  # log s = [s > 1.5] ln 2 + 2 atanh(z), z = (s' - 1) / (s' + 1) in [-1/7, 1/5]
            big = s > _THREE_HALVES
            s2 = s * _HALF if big else s
            off = _LN2 if big else _F0
            z = (s2 - _F1) / (s2 + _F1)
            z2 = z * z
            return off + _F2 * z * (_F1 + z2 * (_C3 + z2 * (_C5 + z2 * (_C7 + z2 * _C9))))

        return impl
    return lambda s: math.log(s)


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def _fwd_tile(D, b, p0, p1, c, n, m, j0, j1, g, big, RU, RL, Wu, Wl, Wd, need_w, out):  # pragma: no cover
    nv = Wu.shape[4]  # == V, read at run time: a constant trip count gets unrolled and then not vectorised
    w = j1 - j0
    nsteps = w + V - 1
    one = g / g
    ig = one / g
    zero = g - g
    Dsk = np.empty((nsteps, V), D.dtype)
    # ring of the lane values of the last three steps; index k + 1 = lane k, index 0 = the row above the strip
    ring = np.empty((3, V + 1), D.dtype)
    for p in range(p0, p1):
        i0 = p * V
        nk = min(V, n - i0)  # valid lanes
        pw = p if need_w else 0  # without weights, every strip of a tile writes the same scratch block
        Dsk[:, :] = zero
        for k in range(nk):
            for jj in range(w):
                Dsk[jj + k, k] = D[b, i0 + k, j0 + jj]
        for k in range(V):
            v = RL[b, c, i0 + k] if k < nk else big  # R(i0 + k, j0 - 1)
            ring[2, k + 1] = v  # step -1
            ring[1, k + 1] = v  # step -2
        ring[2, 0] = RU[b, p, j0 + 1]  # R(i0 - 1, j0)
        ring[1, 0] = RU[b, p, j0]  # R(i0 - 1, j0 - 1)
        kfin = n - 1 - i0 if j0 <= m - 1 < j1 else -1  # lane of the final cell, if this strip and tile hold it
        for t in range(nsteps):
            ci = t % 3
            pi = (t + 2) % 3
            qi = (t + 1) % 3
            for k in range(nv):
                up = ring[pi, k]
                left = ring[pi, k + 1]
                dg = ring[qi, k]
                mn = min(up, min(left, dg))
                eu = _exp_nonpos((mn - up) * ig)
                el = _exp_nonpos((mn - left) * ig)
                ed = _exp_nonpos((mn - dg) * ig)
                s = eu + el + ed
                r = Dsk[t, k] + mn - g * _log_1_3(s)
                ring[ci, k + 1] = r if t >= k else left  # a lane not yet started keeps R(i, j0 - 1)
                inv = one / s
                Wu[b, pw, c, t, k] = eu * inv
                Wl[b, pw, c, t, k] = el * inv
                Wd[b, pw, c, t, k] = ed * inv
            jl = t - (V - 1)  # local column of the last lane: it feeds the next strip
            if 0 <= jl < w:
                RU[b, p + 1, j0 + jl + 1] = ring[ci, V]
            kr = t - (w - 1)  # lane at the tile's last column: it feeds the next tile
            if 0 <= kr < nk:
                RL[b, c + 1, i0 + kr] = ring[ci, kr + 1]
            if 0 <= kfin < V and t == m - 1 - j0 + kfin:
                out[b] = ring[ci, kfin + 1]
            ring[ci, 0] = RU[b, p, min(j0 + t + 2, j1)]  # R(i0 - 1, j0 + t + 1), clamped inside the tile


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def _bwd_tile(G, b, p0, p1, c, n, m, j0, j1, go, zero, Wu, Wl, Wd, BU, BD, CL, CD):  # pragma: no cover
    nv = Wu.shape[4]  # == V, read at run time (see _fwd_tile)
    w = j1 - j0
    nsteps = w + V - 1
    Esk = np.empty((nsteps, V), G.dtype)
    # rings of the products E * W of the last steps, per lane k; index V = the row below the strip
    pu = np.empty((2, V + 1), G.dtype)
    pl = np.empty((2, V + 1), G.dtype)
    pd = np.empty((3, V + 1), G.dtype)
    off = V  # column offset of BU / BD
    t0 = nsteps - 1
    for p in range(p1 - 1, p0 - 1, -1):
        i0 = p * V
        nk = min(V, n - i0)
        # step t uses ring rows: pu/pl cur t % 2, prev (t + 1) % 2; pd cur t % 3, prev (t + 1) % 3, prev2 (t + 2) % 3
        a1 = (t0 + 1) % 2
        b1 = (t0 + 1) % 3
        b2 = (t0 + 2) % 3
        for k in range(V):
            cl = CL[b, c + 1, i0 + k] if k < nk else zero  # E * Wl at (i0 + k, j1)
            cd = CD[b, c + 1, i0 + k] if k < nk else zero
            pl[a1, k] = cl
            pd[b1, k] = cd
            pd[b2, k] = cd
            pu[a1, k] = zero
        pu[a1, V] = BU[b, p + 1, j0 + t0 + 1 - V + off]
        pd[b1, V] = BD[b, p + 1, j0 + t0 + 1 - V + off]
        pd[b2, V] = BD[b, p + 1, j0 + t0 + 2 - V + off]
        kfin = n - 1 - i0
        jfin = m - 1 - j0
        for t in range(t0, -1, -1):
            uc = t % 2
            up_ = (t + 1) % 2
            dc = t % 3
            dp = (t + 1) % 3
            dpp = (t + 2) % 3
            for k in range(nv):
                jj = t - k
                e = pu[up_, k + 1] + pl[up_, k] + pd[dpp, k + 1]
                e = e + go if (k == kfin) & (jj == jfin) else e
                valid = (jj >= 0) & (jj < w) & (k < nk)
                e = e if valid else zero
                Esk[t, k] = e
                # branch-free so that the lane loop vectorises; the weights are finite everywhere in the tile
                keep_l = pl[up_, k]
                keep_d = pd[dp, k]
                xu = e * Wu[b, p, c, t, k]
                xl = e * Wl[b, p, c, t, k]
                xd = e * Wd[b, p, c, t, k]
                started = jj < w
                pu[uc, k] = xu
                pl[uc, k] = xl if started else keep_l
                pd[dc, k] = xd if started else keep_d
            if t < w and nk > 0:  # lane 0 feeds the strip above
                BU[b, p, j0 + t + off] = pu[uc, 0]
                BD[b, p, j0 + t + off] = pd[dc, 0]
            if t < nk:  # lane t is at the tile's first column: it feeds the tile on the left
                CL[b, c, i0 + t] = pl[uc, t]
                CD[b, c, i0 + t] = pd[dc, t]
            pu[uc, V] = BU[b, p + 1, j0 + t - V + off]
            pd[dc, V] = BD[b, p + 1, j0 + t - V + off]
        for k in range(nk):
            for jj in range(w):
                G[b, i0 + k, j0 + jj] = Esk[jj + k, k]


@njit(cache=True, nogil=True, error_model="numpy")
def _fwd_block(D, lx, ly, g, big, ntj, rb, r, c, RU, RL, Wu, Wl, Wd, need_w, out):  # pragma: no cover
    """Row block ``r`` (strips r rb .. r rb + rb - 1) of column tile ``c``, for every sample."""
    for b in range(D.shape[0]):
        n = lx[b]
        m = ly[b]
        p0 = r * rb
        p1 = min((n + V - 1) // V, p0 + rb)
        if p0 < p1:
            _fwd_tile(D, b, p0, p1, c, n, m, c * m // ntj, (c + 1) * m // ntj, g, big, RU, RL, Wu, Wl, Wd, need_w,
                      out)


@njit(cache=True, parallel=True, error_model="numpy")
def _fwd_batch(D, lx, ly, g, big, RU, RL, Wu, Wl, Wd, need_w, out):  # pragma: no cover
    """Every sample as one tile, in parallel over the batch."""
    for b in prange(D.shape[0]):
        n = lx[b]
        m = ly[b]
        _fwd_tile(D, b, 0, (n + V - 1) // V, 0, n, m, 0, m, g, big, RU, RL, Wu, Wl, Wd, need_w, out)


@njit(cache=True, nogil=True, error_model="numpy")
def _bwd_block(G, lx, ly, go, zero, ntj, rb, r, c, Wu, Wl, Wd, BU, BD, CL, CD):  # pragma: no cover
    """Backward of row block ``r`` of column tile ``c``, for every sample."""
    for b in range(G.shape[0]):
        n = lx[b]
        m = ly[b]
        p0 = r * rb
        p1 = min((n + V - 1) // V, p0 + rb)
        if p0 < p1:
            _bwd_tile(G, b, p0, p1, c, n, m, c * m // ntj, (c + 1) * m // ntj, go[b], zero, Wu, Wl, Wd, BU, BD, CL,
                      CD)


@njit(cache=True, parallel=True, error_model="numpy")
def _bwd_batch(G, lx, ly, go, zero, Wu, Wl, Wd, BU, BD, CL, CD):  # pragma: no cover
    """Backward of every sample as one tile, in parallel over the batch."""
    for b in prange(G.shape[0]):
        n = lx[b]
        m = ly[b]
        _bwd_tile(G, b, 0, (n + V - 1) // V, 0, n, m, 0, m, go[b], zero, Wu, Wl, Wd, BU, BD, CL, CD)


@njit(cache=True, parallel=True, error_model="numpy")
def _zero_padding(G, lx, ly, zero):  # pragma: no cover
    for b in prange(G.shape[0]):
        n = lx[b]
        for i in range(n):
            G[b, i, ly[b]:] = zero
        G[b, n:, :] = zero


_MIN_PIPELINE_THREADS = 4


def _tiling(B: int, cols: int, rows: int, nthreads: int) -> tuple[int, int]:
    """(column tiles, strips per row block). One whole-sample tile per sample when the batch fills the threads
    or there are fewer than 4 threads; else ``ntj`` column tiles of >= 128 columns (each strip costs a halo of
    V - 1 steps) and about 4 ntj row blocks, which the threads run as a pipeline.

    Why not on 2 threads: right after the cost is built, torch's OpenMP workers spin on the other core for a few
    ms, so a second pipeline thread mostly waits for a core; measured on 2 cores with B = 1, L = 3000, S = 300,
    the pipeline won on the best runs (5.4 vs 6.4 ms) and lost on the median (9.2 vs 7.8 ms).
    """
    strips = -(-rows // V)
    if nthreads < _MIN_PIPELINE_THREADS or B >= nthreads:
        return 1, strips
    ntj = min(-(-nthreads // B), max(1, cols // 128))
    return (1, strips) if ntj == 1 else (ntj, max(1, strips // (4 * ntj)))


_EXECUTOR: tuple[int, ThreadPoolExecutor] | None = None


def _executor(workers: int) -> ThreadPoolExecutor:
    global _EXECUTOR
    if _EXECUTOR is None or _EXECUTOR[0] != os.getpid() or _EXECUTOR[1]._max_workers < workers:
        _EXECUTOR = (os.getpid(), ThreadPoolExecutor(workers, thread_name_prefix="lyra-soft-dtw"))
    return _EXECUTOR[1]


def _pipeline(ntj: int, nrb: int, run: Callable[[int, int], None], reverse: bool) -> None:
    """Run ``run(r, c)`` for every row block r and column tile c: tile c in its own thread, its blocks in order,
    each once tile c - 1 has finished that block (``reverse``: tiles and blocks backwards, after tile c + 1).

    The threads wait only on their neighbour, never on a barrier of all threads, so a thread that the OS
    pauses (a busy machine) delays only the tiles that depend on it; the kernels release the GIL.
    """
    done = [0] * ntj
    failed: list[BaseException] = []
    cond = threading.Condition()
    blocks = range(nrb - 1, -1, -1) if reverse else range(nrb)

    def worker(c: int) -> None:
        dep = c + 1 if reverse else c - 1
        try:
            for k, r in enumerate(blocks):
                if 0 <= dep < ntj:
                    with cond:
                        cond.wait_for(lambda: done[dep] > k or failed)
                        if failed:
                            return
                run(r, c)
                with cond:
                    done[c] = k + 1
                    cond.notify_all()
        except BaseException as err:
            with cond:
                failed.append(err)
                cond.notify_all()
            raise

    tiles = range(ntj - 1, -1, -1) if reverse else range(ntj)  # the independent tile first
    for future in [_executor(ntj).submit(worker, c) for c in tiles]:
        future.result()


def forward(D: Tensor, lx: Tensor, ly: Tensor, gamma: float, need_w: bool) -> tuple[Tensor, tuple]:
    """Values (B,) of the contiguous CPU cost ``D`` (B, L, S) and the state the backward needs."""
    B, L, S = D.shape
    ntj, rb = _tiling(B, int(ly.min()), L, numba.get_num_threads())
    ns = -(-L // V)
    W = tuple(torch.empty((B, ns if need_w else 1, ntj, -(-S // ntj) + V - 1, V), dtype=D.dtype) for _ in range(3))
    out = torch.empty(B, dtype=D.dtype)
    scalar = np.float32 if D.dtype == torch.float32 else np.float64
    g, big = scalar(gamma), scalar(_BIG)
    RU = np.empty((B, ns + 1, S + 1), D.numpy().dtype)  # RU[b, p, x + 1] = R(p V - 1, x): the row above strip p
    RU[:, 0, 0] = 0.0
    RU[:, 0, 1:] = big
    RU[:, 1:, 0] = big
    RL = np.empty((B, ntj + 1, ns * V), D.numpy().dtype)  # RL[b, c, i] = R(i, j0(c) - 1): the column left of tile c
    RL[:, 0] = big
    Dn, lxn, lyn, (Wu, Wl, Wd), outn = D.numpy(), lx.numpy(), ly.numpy(), (w.numpy() for w in W), out.numpy()
    if ntj == 1 and B == 1:  # no parallel region: its idle threads would spin on the other cores
        _fwd_block(Dn, lxn, lyn, g, big, 1, rb, 0, 0, RU, RL, Wu, Wl, Wd, need_w, outn)
    elif ntj == 1:
        _fwd_batch(Dn, lxn, lyn, g, big, RU, RL, Wu, Wl, Wd, need_w, outn)
    else:
        _pipeline(ntj, -(-ns // rb), lambda r, c: _fwd_block(Dn, lxn, lyn, g, big, ntj, rb, r, c, RU, RL, Wu, Wl, Wd,
                                                             need_w, outn), reverse=False)
    return out, (W, ntj, rb)


def backward(go: Tensor, lx: Tensor, ly: Tensor, shape: tuple[int, int, int], state: tuple) -> Tensor:
    """The gradient (B, L, S) of ``sum(go * values)`` with respect to ``D``; zero outside the lengths."""
    (Wu, Wl, Wd), ntj, rb = (w.numpy() for w in state[0]), state[1], state[2]
    B, L, S = shape
    ns = -(-L // V)
    G = torch.empty(shape, dtype=go.dtype)
    Gn, lxn, lyn, gon = G.numpy(), lx.numpy(), ly.numpy(), go.numpy()
    zero = gon.dtype.type(0)
    BU = np.zeros((B, ns + 1, S + 2 * V), gon.dtype)  # BU[b, p, j + V] = E(p V, j) Wu(p V, j), from strip p
    BD = np.zeros((B, ns + 1, S + 2 * V), gon.dtype)
    CL = np.zeros((B, ntj + 1, ns * V), gon.dtype)  # CL[b, c, i] = E(i, j0(c)) Wl(i, j0(c)), from tile c
    CD = np.zeros((B, ntj + 1, ns * V), gon.dtype)
    if ntj == 1 and B == 1:
        _bwd_block(Gn, lxn, lyn, gon, zero, 1, rb, 0, 0, Wu, Wl, Wd, BU, BD, CL, CD)
    elif ntj == 1:
        _bwd_batch(Gn, lxn, lyn, gon, zero, Wu, Wl, Wd, BU, BD, CL, CD)
    else:
        _pipeline(ntj, -(-ns // rb), lambda r, c: _bwd_block(Gn, lxn, lyn, gon, zero, ntj, rb, r, c, Wu, Wl, Wd, BU,
                                                             BD, CL, CD), reverse=True)
    if bool((lx < L).any() or (ly < S).any()):
        _zero_padding(Gn, lxn, lyn, zero)
    return G
