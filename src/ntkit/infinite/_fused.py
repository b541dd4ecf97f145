"""Fused CPU kernels for the infinite-width recursions (numba), with the torch code as the reference path.

The torch formulations stream each block of covariances through memory once per elementwise operation: the
ReLU arc-cosine step is about twelve passes (×, √, ÷, clamp, arccos, snaps, two fused multiply-adds, the NTK
product) and a k×k convolution's window sum and affine map about 3k + 3 per kind. Here each layer is one pass
over the block per kind, every intermediate in registers:

* :func:`relu_pairs`: K' = √(Σ11Σ22)/(2π)·(sin θ + (π − θ) cos θ), K̇ = (π − θ)/(2π) and the NTK update
  Θ' = K̇·Θ, with cos θ = Σ12/√(Σ11Σ22) (Cho & Saul, *Kernel Methods for Deep Learning*, NeurIPS 2009; Jacot
  et al. 2018), with exactly the clipping, snapping to ±1 and zero-variance limit of
  :func:`ntkit.infinite.activations.relu_kernels` (:func:`relu_kernels` is the same on broadcast inputs);
  π − arccos is a branch-free polynomial within 1 ulp (:data:`ASIN_COEFFS`), so that the loop vectorises
  (libm's scalar ``acos`` made the first version slower than torch's SLEEF);
* :func:`conv_affine`: K' = w2·S(K) + b2 and Θ' = K' + w2·S(Θ) of a stride-1 "same" or "circular"
  convolution, S the window sum Σ_o K[p + o, p' + o] over the filter offsets (Novak et al., *Bayesian Deep
  Convolutional Networks with Many Channels are Gaussian Processes*, ICLR 2019), separable and plane by plane
  in L1, an offset along (w, v) a masked constant shift of the flattened plane (or contiguous runs, circular);
  :func:`dense_affine` the same map for a dense layer (S the identity), under the same switch "conv_affine";
* :func:`window_sum`: S alone for any padding, zero ("same", "valid") or circular (by contiguous runs).

The kernels are compiled without the GIL (``nogil``), so the blocks that ``ntkit.infinite.blocked`` runs on
worker threads can run on all cores, and cached on disk (``cache=True``) after their first compilation. Every
loop is written so that LLVM vectorises it (checked in the assembly): numba's ``error_model="numpy"`` (no
Python exception test per ÷ or √), loop indices that cannot be negative (slices instead of ``j + shift``, which
would get a wraparound test), and selects after unconditional loads instead of loads under a branch.

Measured on an AMD EPYC (Zen 4, one thread, CPU time, float64, 2026-11-29), against the torch path: the ReLU
step with the NTK product 6–10 against 14–30 ns per entry ((8, 8, 8, 8, 8, 8), (16, 16, 40, 40) and (512, 512)
blocks); the "same" 3×3 conv map of both kinds 3.6 against 16 ns per entry; whole kernels (CNTK-GAP, Myrtle-5,
FC depth 10, 1-D CNTK) 1.5–3× faster (bench/infinite.py). ``DEFAULT_KERNELS`` are those measured faster; the
zero-padded :func:`window_sum` is not one (the conv map does its work). ``NTKIT_FUSED=1`` turns every fused
kernel on, ``NTKIT_FUSED=0`` every one off. Each entry point returns None when it does not apply (off, numba
missing, not on the CPU, not float32/float64, a tensor carrying a derivative); the caller then takes the torch
path, which is also what the tests compare these kernels with.
"""

from __future__ import annotations

import functools
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
DEFAULT_KERNELS = frozenset({"relu", "conv_affine", "window_sum_circular"})
KERNELS = ("relu", "window_sum", "window_sum_circular", "conv_affine")


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


#: asin(s) = s + s·z·P(z) with z = s² ∈ [0, 1/4] (s ≤ 1/2), P of degree 12 in z: least squares on 80 Chebyshev
#: nodes of [0, 1/4], fitted in 60-digit arithmetic (mpmath) to R(z) = (asin √z − √z)/z^{3/2}; the relative error
#: of P is ≤ 7.5e-17, and the term s·z·P is at most 5 % of s, so asin(s) — and π − arccos(c) built from it below —
#: is within 1 ulp of the exact value (checked against mpmath at 4,000 points of [−1, 1] in the tests).
ASIN_COEFFS = (
    0.16666666666666669, 0.0749999999999834, 0.04464285714653523, 0.03038194412500875, 0.022372173467043486,
    0.017352380709839098, 0.01397138708310213, 0.011477517005507167, 0.01033337215296726, 0.005413184483715509,
    0.01751883397953867, -0.015032162599250314, 0.028878362746452394,
)  # fmt: skip

_INV_TWO_PI = 1.0 / (2.0 * math.pi)

if NUMBA_AVAILABLE:
    _C = ASIN_COEFFS
    # error_model="numpy": a division by zero or the √ of a negative number gives inf/NaN as in torch instead of
    # raising, which is also what lets LLVM vectorise the loops (a Python-semantics check per element does not).
    _jit = numba.njit(cache=True, nogil=True, error_model="numpy")

    @numba.njit(inline="always", error_model="numpy")
    def _pi_minus_arccos(c):  # pragma: no cover - compiled
        """π − arccos(c) for c ∈ [−1, 1], branch-free (selects, so that the loops calling it vectorise).

        |c| ≤ 1/2: π − arccos c = π/2 + asin c. |c| > 1/2: with s = √((1 − |c|)/2) (1 − |c| is exact),
        arccos|c| = 2 asin s, so π − arccos c = π − 2 asin s for c > 0 and 2 asin s for c < 0: no cancellation
        near c = −1, where π − torch.arccos(c) loses up to 1e-9 relative.
        """
        a = abs(c)
        big = a > 0.5
        z = 0.5 * (1.0 - a) if big else a * a
        s = math.sqrt(z) if big else a
        p = _C[12] * z + _C[11]
        p = p * z + _C[10]
        p = p * z + _C[9]
        p = p * z + _C[8]
        p = p * z + _C[7]
        p = p * z + _C[6]
        p = p * z + _C[5]
        p = p * z + _C[4]
        p = p * z + _C[3]
        p = p * z + _C[2]
        p = p * z + _C[1]
        p = p * z + _C[0]
        r = s + s * z * p  # asin(s)
        small = 0.5 * math.pi + r if c >= 0 else 0.5 * math.pi - r
        return small if not big else (math.pi - 2.0 * r if c > 0 else 2.0 * r)

    @numba.njit(inline="always", error_model="numpy")
    def _relu_pair(x, norm, snap, sin_snap_squared):  # pragma: no cover - compiled
        """(K', K̇) of one pair from Σ12 = x and √(Σ11Σ22) = norm, as activations.relu_kernels computes them."""
        bad = x != x or norm != norm
        cos = x / norm
        cos = 0.0 if cos != cos else cos  # 0/0: a zero variance (the limit does not depend on it)
        cos = min(1.0, max(-1.0, cos))  # ±inf (x ≠ 0 over a zero variance) → ±1, as nan_to_num + clamp
        pmt = _pi_minus_arccos(cos)
        pmt = math.pi if math.pi - pmt <= snap else pmt  # θ ≤ θ_snap is θ = 0
        pmt = 0.0 if pmt <= snap else pmt  # π − θ ≤ θ_snap is θ = π
        sin_squared = 1.0 - cos * cos
        sin_squared = 0.0 if sin_squared <= sin_snap_squared else sin_squared
        # × 1/(2π) instead of ÷ 2π: an ulp from the torch path at most, and two divisions fewer per entry
        # (π·fl(1/(2π)) is exactly 1/2, so K̇ = 1/2 on self-pairs as before)
        k1 = norm * _INV_TWO_PI * (math.sqrt(sin_squared) + cos * pmt)
        k0 = pmt * _INV_TWO_PI
        return (math.nan if bad else k1), (math.nan if bad else k0)

    @_jit
    def _relu_flat(cov12, norm_k1, k0_or_tangent, snap, sin_snap_squared, multiply):  # pragma: no cover
        """One pass over contiguous 1-D views: norm_k1 holds √(Σ11Σ22) on entry and K' on return;
        k0_or_tangent gets K̇, or (``multiply``) holds Θ on entry and K̇·Θ on return."""
        if multiply:
            for i in range(cov12.shape[0]):
                k1, k0 = _relu_pair(cov12[i], norm_k1[i], snap, sin_snap_squared)
                norm_k1[i] = k1
                k0_or_tangent[i] = k0 * k0_or_tangent[i]
        else:
            for i in range(cov12.shape[0]):
                k1, k0 = _relu_pair(cov12[i], norm_k1[i], snap, sin_snap_squared)
                norm_k1[i] = k1
                k0_or_tangent[i] = k0

    @_jit
    def _relu_rows(cov12, left, right, right_by_row, tangent, k1, out, snap, sin_snap_squared):  # pragma: no cover
        """The ReLU step over cov12 (A, B, C, D, P) with P = E·F a flattened plane, Σ11 = left[a, c, e] and
        Σ22 = right[b or a, d, f] (``right_by_row``: the self-covariances, both sides the same example a).
        k1 gets K'; out gets K̇·Θ (``tangent`` is Θ) or, with a 0-size ``tangent``, K̇. The products Σ11Σ22 of a
        row are formed first (E·F of them), then the row runs as one long loop that vectorises; √(Σ11Σ22) is
        taken there, as the torch path takes it, so that the cosines are the same to the last bit."""
        n_a, n_b, n_c, n_d, plane = cov12.shape
        width = right.shape[2]
        norm = np.empty(plane, dtype=np.float64)
        multiply = tangent.size > 0
        for a in range(n_a):
            for b in range(n_b):
                rb = a if right_by_row else b
                for c in range(n_c):
                    for d in range(n_d):
                        for e in range(left.shape[2]):
                            le = left[a, c, e]
                            for f in range(width):
                                norm[e * width + f] = le * right[rb, d, f]
                        x, o, q = cov12[a, b, c, d], k1[a, b, c, d], out[a, b, c, d]
                        if multiply:
                            t = tangent[a, b, c, d]
                            for j in range(plane):
                                kk, k0 = _relu_pair(x[j], math.sqrt(norm[j]), snap, sin_snap_squared)
                                o[j] = kk
                                q[j] = k0 * t[j]
                        else:
                            for j in range(plane):
                                kk, k0 = _relu_pair(x[j], math.sqrt(norm[j]), snap, sin_snap_squared)
                                o[j] = kk
                                q[j] = k0

    @numba.njit(inline="always", error_model="numpy")
    def _sum_planes(src, h, g, index_h, rows):  # pragma: no cover - compiled
        """rows = Σ_o src[h + o, g + o] over the offsets along h (index_h[h, o] = h + o, −1 in the padding):
        the first half of a separable window sum, on flattened (w, v) planes."""
        first = True
        for oh in range(index_h.shape[1]):
            i, k = index_h[h, oh], index_h[g, oh]
            if i >= 0 and k >= 0:
                x = src[i, k]
                if first:  # a copy, not zeros and a sum: one pass less
                    rows[:] = x
                    first = False
                else:
                    for j in range(rows.shape[0]):
                        rows[j] += x[j]
        if first:
            rows[:] = 0.0

    @numba.njit(inline="always", error_model="numpy")
    def _affine(acc, first, w2, b2, kind):  # pragma: no cover - compiled
        """K' = w2·S(K) + b2 in place (kind 0), or Θ' = K' + w2·S(Θ) with K' = ``first`` (kind 1)."""
        if kind == 0:
            for j in range(acc.shape[0]):
                acc[j] = w2 * acc[j] + b2
        else:
            for j in range(acc.shape[0]):
                acc[j] = first[j] + w2 * acc[j]

    @_jit
    def _window_affine(t, u, out_t, out_u, index_h, shifts_w, masks_w, w2, b2, with_u):  # pragma: no cover
        """out_t = w2·S(t) + b2 and out_u = out_t + w2·S(u), S the zero-padded window sum of a stride-1 conv.

        t, u, out_*: (M, H, H, P) with P = W·W the flattened (w, v) plane of one pair of rows (h, g). S is
        separable and runs plane by plane, in L1: the planes (h + o_h, g + o_h) are summed, then that sum is
        shifted along the plane, an offset o_w being the constant shift shifts_w[o] = o_w·(W + 1) of the flat
        plane, masked (masks_w[o, j]) where w + o_w or v + o_w falls in the padding. Every inner loop is a
        contiguous run that vectorises.
        """
        n_m, height, _, plane = out_t.shape
        rows = np.empty(plane, dtype=np.float64)
        for m in range(n_m):
            for h in range(height):
                for g in range(height):
                    for kind in range(2 if with_u else 1):
                        _sum_planes(t[m] if kind == 0 else u[m], h, g, index_h, rows)
                        acc = out_t[m, h, g] if kind == 0 else out_u[m, h, g]
                        acc[:] = rows  # the offset o_w = 0: no shift, nothing masked
                        for o in range(shifts_w.shape[0]):
                            s = shifts_w[o]
                            if s == 0:
                                continue
                            lo, hi = max(0, -s), min(plane, plane - s)
                            # slices: non-negative indices (a signed j + s would get numba's wraparound test and
                            # stay scalar); load, then select (a load under the mask's branch stays scalar too)
                            a, x, keep = acc[lo:hi], rows[lo + s : hi + s], masks_w[o, lo:hi]
                            for j in range(hi - lo):
                                v = x[j]
                                a[j] += v if keep[j] else 0.0
                        _affine(acc, out_t[m, h, g], w2, b2, kind)

    @_jit
    def _window_affine_runs(t, u, out_t, out_u, index_h, index_w, runs_w, w2, b2, with_u):  # pragma: no cover
        """As :func:`_window_affine`, for circular padding: along (w, v) an offset reads row index_w[w, o] of the
        summed plane and, within it, at most two contiguous runs (runs_w[o, r] = (v0, v1, shift)), since the
        wrap breaks the constant shift of the flat plane."""
        n_m, height, _, plane = out_t.shape
        width = index_w.shape[0]
        rows = np.empty(plane, dtype=np.float64)
        for m in range(n_m):
            for h in range(height):
                for g in range(height):
                    for kind in range(2 if with_u else 1):
                        _sum_planes(t[m] if kind == 0 else u[m], h, g, index_h, rows)
                        acc = out_t[m, h, g] if kind == 0 else out_u[m, h, g]
                        acc[:] = 0.0
                        for w in range(width):
                            for o in range(index_w.shape[1]):
                                r = index_w[w, o]
                                if r < 0:
                                    continue
                                for run in range(runs_w.shape[1]):
                                    v0, v1, shift = runs_w[o, run, 0], runs_w[o, run, 1], runs_w[o, run, 2]
                                    a = acc[w * width + v0 : w * width + v1]
                                    x = rows[r * width + v0 + shift : r * width + v1 + shift]
                                    for j in range(v1 - v0):
                                        a[j] += x[j]
                        _affine(acc, out_t[m, h, g], w2, b2, kind)

    @_jit
    def _dense_affine(t, u, out_t, out_u, w2, b2, with_u):  # pragma: no cover - compiled
        """out_t = w2·t + b2 and out_u = out_t + w2·u on flat arrays: a dense layer's map of both kinds, one pass."""
        for j in range(t.shape[0]):
            k = w2 * t[j] + b2
            out_t[j] = k
            if with_u:
                out_u[j] = k + w2 * u[j]

    @_jit
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
                        # slices: non-negative loop indices, so that the contiguous run vectorises
                        a, x = out[m, p, q0:q1], t[m, i, q0 + shift : q1 + shift]
                        for q in range(q1 - q0):
                            a[q] += x[q]

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


def _relu_inputs(cov11: torch.Tensor, cov12: torch.Tensor, cov22: torch.Tensor):
    """(Σ12 contiguous, √(Σ11Σ22) as a new contiguous tensor, shape), or None for what the kernel does not take.
    The norm is formed as the torch path forms it, so that the cosines agree to the last bit."""
    if not (cov11.dtype == cov12.dtype == cov22.dtype):
        return None
    shape = torch.broadcast_shapes(cov11.shape, cov12.shape, cov22.shape)
    norm = torch.mul(cov11, cov22).sqrt_().expand(shape).contiguous()
    cov12 = cov12.expand(shape).contiguous()
    return cov12, norm, shape


def _snaps(dtype: torch.dtype) -> tuple[float, float]:
    snap = math.acos(1.0 - _SNAP_EPS * torch.finfo(dtype).eps)  # activations.snap_angle
    return snap, math.sin(snap) ** 2


def relu_kernels(cov11: torch.Tensor, cov12: torch.Tensor, cov22: torch.Tensor):
    """(K', K̇) of ReLU in one pass (see the module docstring), or None where the fused kernel does not apply.

    The inputs broadcast together, as for :func:`ntkit.infinite.activations.relu_kernels`.
    """
    if not all(enabled(t, "relu") for t in (cov11, cov12, cov22)):
        return None
    inputs = _relu_inputs(cov11, cov12, cov22)
    if inputs is None:
        return None
    cov12, k1, shape = inputs
    k0 = torch.empty_like(k1)
    _relu_flat(cov12.view(-1).numpy(), k1.view(-1).numpy(), k0.view(-1).numpy(), *_snaps(k1.dtype), False)
    return k1, k0


def relu_pairs(v_left: torch.Tensor, cov: torch.Tensor, v_right: torch.Tensor, ntk: torch.Tensor | None,
               spatial: int, same_example: bool = False):  # fmt: skip
    """(K', K̇·Θ) — or (K', K̇) when ``ntk`` is None — of ReLU on a pair kernel, in one pass; None where the
    fused kernel does not apply.

    ``cov`` is (N1, N2, *pair axes) with position variances ``v_left`` (N1, *spatial) and ``v_right``
    (N2, *spatial); with ``same_example`` it is the self-covariances (N, *pair axes) and both variances are
    (N, *spatial).
    """
    tensors = (v_left, cov, v_right) + (() if ntk is None else (ntk,))
    if spatial > 2 or not all(enabled(t, "relu") for t in tensors) or len({t.dtype for t in tensors}) != 1:
        return None
    if ntk is not None and ntk.shape != cov.shape:
        return None
    lead = cov.shape[: cov.ndim - 2 * spatial]
    n_a = lead[0]
    n_b = 1 if same_example else lead[1]
    sizes = cov.shape[cov.ndim - 2 * spatial :: 2] if spatial else ()
    # canonical (A, B, C, D, E·F) with left (A, C, E), right (B or A, D, F): the last spatial pair is the plane
    if spatial == 0:  # FC: the plane is one row of the block
        c, e = 1, 1
        shape5 = (n_a, 1, 1, 1, n_b)
        left = v_left.reshape(n_a, 1, 1)
        right = v_right.reshape(1, 1, n_b) if not same_example else v_right.reshape(n_a, 1, 1)
        if same_example:
            shape5 = (n_a, 1, 1, 1, 1)
    else:
        c = sizes[0] if spatial == 2 else 1
        e = sizes[-1]
        shape5 = (n_a, n_b, c, c, e * e)
        left = v_left.reshape(n_a, c, e)
        right = v_right.reshape(v_right.shape[0], c, e)
    x = cov.reshape(shape5).contiguous()
    k1 = torch.empty_like(x)
    out = torch.empty_like(x)
    tangent = x.new_empty((0, 0, 0, 0, 0)) if ntk is None else ntk.reshape(shape5).contiguous()
    left, right = left.contiguous(), right.contiguous()
    _relu_rows(x.numpy(), left.numpy(), right.numpy(), same_example, tangent.numpy(), k1.numpy(),
               out.numpy(), *_snaps(x.dtype))  # fmt: skip
    return k1.reshape(cov.shape), out.reshape(cov.shape)


def dense_affine(nngp: torch.Tensor, ntk: torch.Tensor | None, w2: float, b2: float):
    """K' = w2·K + b2 and Θ' = K' + w2·Θ of an NTK-parameterized dense layer (Jacot et al. 2018) in one pass over
    both kinds (the torch path takes three); None where it does not apply. ``ntk`` may be None."""
    if not enabled(nngp, "conv_affine"):
        return None
    if ntk is not None and (not enabled(ntk, "conv_affine") or ntk.dtype != nngp.dtype or ntk.shape != nngp.shape):
        return None
    t = nngp.contiguous().view(-1)
    u = t if ntk is None else ntk.contiguous().view(-1)
    out_t = torch.empty_like(t)
    out_u = out_t if ntk is None else torch.empty_like(u)
    _dense_affine(t.numpy(), u.numpy(), out_t.numpy(), out_u.numpy(), float(w2), float(b2), ntk is not None)
    return out_t.view(nngp.shape), None if ntk is None else out_u.view(nngp.shape)


def conv_affine(nngp: torch.Tensor, ntk: torch.Tensor | None, kernel_size: tuple[int, ...], padding: str,
                w2: float, b2: float):  # fmt: skip
    """K' = w2·S(K) + b2 and Θ' = K' + w2·S(Θ) for a stride-1 convolution with "same" or "circular" padding (S
    the window sum over the filter offsets, Novak et al. 2019), both kinds in one pass over the block; None where
    it does not apply.

    ``nngp`` and ``ntk`` are (..., *pair axes) with 1 or 2 spatial dimensions; ``ntk`` may be None (self
    covariances, or get="nngp"). The sums run in another order than the torch path's shifted additions, so
    entries agree to k²·ε relative to the sum of the magnitudes of the terms.
    """
    spatial = len(kernel_size)
    if padding not in ("same", "circular") or spatial not in (1, 2):
        return None
    if not enabled(nngp, "conv_affine") or (ntk is not None and not enabled(ntk, "conv_affine")):
        return None
    if ntk is not None and (ntk.dtype != nngp.dtype or ntk.shape != nngp.shape):
        return None
    pair = nngp.shape[nngp.ndim - 2 * spatial :]
    if spatial == 1:  # a 1-D signal is a 2-D image of height 1
        kernel_size, pair = (1, *kernel_size), (1, 1, *pair)
    height, width = pair[0], pair[2]
    if pair[1] != height or pair[3] != width:
        return None
    flat = (-1, height, height, width * width)
    t = nngp.reshape(flat).contiguous()
    u = t if ntk is None else ntk.reshape(flat).contiguous()
    out_t = torch.empty_like(t)
    out_u = out_t if ntk is None else torch.empty_like(u)
    arrays = (t.numpy(), u.numpy(), out_t.numpy(), out_u.numpy())
    if padding == "same":
        _window_affine(*arrays, *_pair_shifts(height, width, kernel_size), float(w2), float(b2), ntk is not None)
    else:
        index_h = np.ascontiguousarray(_offsets(height, kernel_size[0], "circular"), dtype=np.int64)
        index_w = np.ascontiguousarray(_offsets(width, kernel_size[1], "circular"), dtype=np.int64)
        _window_affine_runs(*arrays, index_h, index_w, _runs(index_w), float(w2), float(b2), ntk is not None)
    return out_t.reshape(nngp.shape), None if ntk is None else out_u.reshape(nngp.shape)


@functools.lru_cache(maxsize=32)
def _pair_shifts(height: int, width: int, kernel_size: tuple[int, int]):
    """For a "same" window (offsets as torch pads: ⌊(k−1)/2⌋ before): the source row of each output row and
    offset along h (−1 in the padding), and for each offset o_w the shift o_w·(W + 1) of the flattened (w, v)
    plane with the mask of the outputs whose pair of source positions lies inside [0, W)²."""
    index_h = _offsets(height, kernel_size[0], "same")
    lo = (kernel_size[1] - 1) // 2
    off_w = np.arange(-lo, kernel_size[1] - lo)
    p = np.arange(width)
    ok = (p[None, :] + off_w[:, None] >= 0) & (p[None, :] + off_w[:, None] < width)  # (k, W)
    masks_w = (ok[:, :, None] & ok[:, None, :]).reshape(len(off_w), width * width)
    arrays = (np.ascontiguousarray(index_h, dtype=np.int64), np.ascontiguousarray(off_w * (width + 1), dtype=np.int64),
              np.ascontiguousarray(masks_w, dtype=np.bool_))  # fmt: skip
    for a in arrays:
        a.setflags(write=False)
    return arrays


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
