"""Fused CPU kernels for the infinite-width recursions (numba), with the torch code as the reference path.

The torch formulations stream each block of covariances through memory once per elementwise operation: the
ReLU arc-cosine step is about ten passes (√, ÷, clamp, snap, arccos, two fused multiply-adds, ...) and a k×k
convolution's window sum k² shifted additions. Here each is one pass over the block, every intermediate in
registers:

* :func:`relu_kernels`: K' = √(Σ11Σ22)/(2π)·(sin θ + (π − θ) cos θ) and K̇ = (π − θ)/(2π) with
  cos θ = Σ12/√(Σ11Σ22) (Cho & Saul, *Kernel Methods for Deep Learning*, NeurIPS 2009), with exactly the
  clipping, snapping to ±1 and zero-variance limit of :func:`ntkit.infinite.activations.relu_kernels`;
* :func:`window_sum`: S[p, p'] = Σ_o K[p + o, p' + o] over the filter offsets o of a stride-1 convolution on
  every pair of spatial axes at once, zero ("same", "valid") or circular padding (Novak et al., *Bayesian Deep
  Convolutional Networks with Many Channels are Gaussian Processes*, ICLR 2019, eq. for the CNN-GP).

The kernels are compiled without the GIL (``nogil``), so the blocks that ``ntkit.infinite.blocked`` runs on
worker threads can run on all cores, and cached on disk (``cache=True``) after their first compilation.

Which kernels run by default is what measured faster than the torch path on an AMD EPYC (Zen 4, one thread, CPU
time, float64, 2026-11-29): only the window sum of circular padding (the torch path pads by ``index_select``):
3.8 ms against 5.1 ms on a (16, 16, 40, 40) block, and the 1-D CNTK of issue 11 (3 × Conv1d k=5 circular + ReLU,
100 + 200 signals) in 0.79× the time. The ReLU step (7.4 against 7.7 ms on (8, 8, 8, 8, 8, 8), 11.1 against 6.9
ms on (16, 16, 40, 40): numba calls libm's scalar ``acos`` where torch uses SLEEF's vectorised one) and the
zero-padded window sums (3.9 against 0.6 ms for 3×3: torch's shifted ``add_`` passes vectorise better) are off.
``NTKIT_FUSED=1`` turns every fused kernel on, ``NTKIT_FUSED=0`` every one off. Each entry point returns None
when it does not apply (off, numba missing, not on the CPU, not float32/float64); the caller then takes the
torch path, which is also what the tests compare these kernels with.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

try:
    import numba
except ImportError:  # pragma: no cover - exercised by monkeypatching NUMBA_AVAILABLE in the tests
    numba = None

ENV_VAR = "NTKIT_FUSED"
NUMBA_AVAILABLE = numba is not None
_SNAP_EPS = 16  # ntkit.infinite.activations.COSINE_SNAP_EPS (imported lazily there to avoid a cycle)


#: Fused kernels that run when ``NTKIT_FUSED`` is not set: those measured faster than the torch path.
DEFAULT_KERNELS = frozenset({"window_sum_circular"})
KERNELS = ("relu", "window_sum", "window_sum_circular")


def enabled(t: torch.Tensor, kernel: str) -> bool:
    """True when the fused ``kernel`` (one of :data:`KERNELS`) can take ``t``: turned on (``NTKIT_FUSED=1``,
    or unset and ``kernel`` in :data:`DEFAULT_KERNELS`), numba importable, and a CPU float32/float64 tensor
    that carries no derivative (autograd-recorded or forward-mode)."""
    setting = os.environ.get(ENV_VAR, "").strip()
    on = setting == "1" or (setting != "0" and kernel in DEFAULT_KERNELS)
    return (
        on
        and NUMBA_AVAILABLE
        and t.device.type == "cpu"
        and t.dtype in (torch.float32, torch.float64)
        and not (t.requires_grad and torch.is_grad_enabled())
        and fwAD.unpack_dual(t).tangent is None  # a forward-mode derivative would be dropped
    )


if NUMBA_AVAILABLE:

    @numba.njit(cache=True, nogil=True)
    def _relu_6d(c11, c12, c22, k1, k0, snap, sin_snap_squared):  # pragma: no cover - compiled
        two_pi = 2.0 * math.pi
        n0, n1, n2, n3, n4, n5 = k1.shape
        for a in range(n0):
            for b in range(n1):
                for c in range(n2):
                    for d in range(n3):
                        for e in range(n4):
                            for f in range(n5):
                                norm = math.sqrt(c11[a, b, c, d, e, f] * c22[a, b, c, d, e, f])
                                x = c12[a, b, c, d, e, f]
                                if norm == 0.0:
                                    cos = 0.0 if x == 0.0 or x != x else (1.0 if x > 0 else -1.0)
                                else:
                                    cos = x / norm
                                    if cos != cos:
                                        cos = 0.0
                                cos = min(1.0, max(-1.0, cos))
                                theta = math.acos(cos)
                                if theta <= snap:  # as relu_kernels: the snap is on the angle
                                    theta = 0.0
                                pi_minus_theta = math.pi - theta
                                if pi_minus_theta <= snap:
                                    pi_minus_theta = 0.0
                                sin_squared = 1.0 - cos * cos
                                if sin_squared <= sin_snap_squared:
                                    sin_squared = 0.0
                                bracket = math.sqrt(sin_squared) + cos * pi_minus_theta
                                k1[a, b, c, d, e, f] = norm / two_pi * bracket
                                k0[a, b, c, d, e, f] = pi_minus_theta / two_pi

    @numba.njit(cache=True, nogil=True)
    def _window_sum_1d(t, index, runs, out):  # pragma: no cover - compiled
        out[:] = 0.0
        n, length, _ = out.shape
        for m in range(n):
            for o in range(index.shape[1]):
                for p in range(length):
                    i = index[p, o]
                    if i < 0:
                        continue
                    for r in range(runs.shape[1]):
                        q0, q1, shift = runs[o, r, 0], runs[o, r, 1], runs[o, r, 2]
                        for q in range(q0, q1):  # contiguous: vectorised
                            out[m, p, q] += t[m, i, q + shift]

    @numba.njit(cache=True, nogil=True)
    def _window_sum_2d(t, index_h, index_w, runs_w, out):  # pragma: no cover - compiled
        out[:] = 0.0
        n, height, _, width, _ = out.shape
        for m in range(n):
            for oh in range(index_h.shape[1]):
                for h in range(height):
                    i = index_h[h, oh]
                    if i < 0:
                        continue
                    for g in range(height):
                        j = index_h[g, oh]
                        if j < 0:
                            continue
                        for ow in range(index_w.shape[1]):
                            for w in range(width):
                                r = index_w[w, ow]
                                if r < 0:
                                    continue
                                for run in range(runs_w.shape[1]):
                                    v0, v1, shift = runs_w[ow, run, 0], runs_w[ow, run, 1], runs_w[ow, run, 2]
                                    for v in range(v0, v1):
                                        out[m, h, g, w, v] += t[m, i, j, r, v + shift]


def relu_kernels(cov11: torch.Tensor, cov12: torch.Tensor, cov22: torch.Tensor):
    """(K', K̇) of ReLU in one pass (see the module docstring), or None where the fused kernel does not apply.

    The inputs broadcast together (up to 6 axes), as for :func:`ntkit.infinite.activations.relu_kernels`.
    """
    if not enabled(cov12, "relu"):
        return None
    cov11, cov12, cov22 = torch.broadcast_tensors(cov11, cov12, cov22)
    if cov12.ndim > 6 or cov11.dtype != cov12.dtype or cov22.dtype != cov12.dtype:
        return None
    shape = cov12.shape
    six = (1,) * (6 - len(shape)) + tuple(shape)
    views = [c[(None,) * (6 - len(shape))] for c in (cov11, cov12, cov22)]  # views, broadcast axes of stride 0
    k1 = torch.empty(six, dtype=cov12.dtype)
    k0 = torch.empty(six, dtype=cov12.dtype)
    snap = math.acos(1.0 - _SNAP_EPS * torch.finfo(cov12.dtype).eps)  # activations.snap_angle
    _relu_6d(*(v.numpy() for v in views), k1.numpy(), k0.numpy(), snap, math.sin(snap) ** 2)
    return k1.reshape(shape), k0.reshape(shape)


def _offsets(size: int, k: int, padding: str) -> np.ndarray:
    """index[p, o]: the input position that output position p reads at filter offset o, −1 in the zero padding;
    offsets as torch pads: "same" lo = ⌊(k−1)/2⌋ before, the rest after; "valid" none; "circular" wraps."""
    if padding == "valid":
        return np.arange(size - k + 1)[:, None] + np.arange(k)[None, :]
    lo = (k - 1) // 2
    index = np.arange(size)[:, None] + np.arange(-lo, k - lo)[None, :]
    if padding == "circular":
        return index % size
    return np.where((index >= 0) & (index < size), index, -1)


def _runs(index: np.ndarray) -> np.ndarray:
    """For each offset o, at most two runs (q0, q1, shift) of output positions whose inputs index[q, o] = q + shift
    are contiguous (a circular wrap splits one run in two; padded positions are left out)."""
    runs = np.zeros((index.shape[1], 2, 3), dtype=np.int64)
    for o in range(index.shape[1]):
        column, count, q = index[:, o], 0, 0
        while q < len(column):
            if column[q] < 0:
                q += 1
                continue
            start, shift = q, column[q] - q
            while q < len(column) and column[q] == q + shift:
                q += 1
            runs[o, count] = (start, q, shift)
            count += 1
    return runs


def window_sum(t: torch.Tensor, kernel_size: tuple[int, ...], padding: str):
    """Σ_o t[..., p + o, p' + o] over the filter offsets of a stride-1 convolution on the trailing pair axes
    ((L, L') for Conv1d, (H, H', W, W') for Conv2d), in one pass; None where the fused kernel does not apply."""
    spatial = len(kernel_size)
    kernel = "window_sum_circular" if padding == "circular" else "window_sum"
    if not enabled(t, kernel) or spatial not in (1, 2) or t.ndim < 2 * spatial:
        return None
    lead = t.shape[: t.ndim - 2 * spatial]
    flat = t.reshape(-1, *t.shape[t.ndim - 2 * spatial :]).contiguous()
    sizes = [t.shape[t.ndim - 2 * (spatial - d)] for d in range(spatial)]
    indices = [
        np.ascontiguousarray(_offsets(s, k, padding), dtype=np.int64) for s, k in zip(sizes, kernel_size, strict=True)
    ]
    out_sizes = [index.shape[0] for index in indices]
    pair = tuple(s for size in out_sizes for s in (size, size))
    out = torch.empty((flat.shape[0], *pair), dtype=t.dtype)
    if spatial == 1:
        _window_sum_1d(flat.numpy(), indices[0], _runs(indices[0]), out.numpy())
    else:
        _window_sum_2d(flat.numpy(), indices[0], indices[1], _runs(indices[1]), out.numpy())
    return out.reshape(*lead, *pair)
