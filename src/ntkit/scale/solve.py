"""Kernel regression without a dense factor: preconditioned conjugate gradients on (K + λI) α = y.

Every matrix-vector product streams the kernel's tiles from its store (``_stream.StreamedMatrix``), so the driver
holds vectors of length N and an (N, rank) preconditioner, never the (N, N) matrix. The preconditioner is the
Nyström approximation K ≈ F Fᵀ from ``rank`` landmarks, inverted with the Woodbury identity:

    F = U diag(s) Vᵀ (thin SVD),   P = F Fᵀ + λI,   P⁻¹ r = U diag(1 / (s² + λ)) Uᵀ r + (r − U Uᵀ r) / λ.

References
----------
Hestenes & Stiefel, *Methods of Conjugate Gradients for Solving Linear Systems*, 1952 (CG); Rudi, Carratino &
Rosasco, *FALKON: An Optimal Large Scale Kernel Method*, NeurIPS 2017, and Meanti et al., *Kernel Methods Through
the Roof*, NeurIPS 2020 (Nyström-preconditioned CG); Frangella, Tropp & Udell, *Randomized Nyström
Preconditioning*, SIAM J. Matrix Anal. Appl. 2023; Chen, Epperly, Tropp & Webber, *Randomly Pivoted Cholesky*,
Comm. Pure Appl. Math. 2024 (pivoted landmarks); Adlam et al. 2023 (distributed preconditioned CG for NTKs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ntkit._validation import positive_int, real_number
from ntkit.scale._stream import StreamedMatrix

_PRECONDITIONERS = ("nystrom", None)
_LANDMARKS = ("random", "pivoted")


@dataclass
class SolveResult:
    """``alpha`` (N,) or (N, O) with (K + λI) alpha ≈ y; ``residuals[k]`` = max over columns of ‖y − (K + λI)α_k‖
    / ‖y‖ after iteration k (the recursive residual of CG); ``residual``: that of the returned alpha, recomputed
    with one more product; ``diag_reg_absolute``: λ as added to the diagonal; ``rank``: the preconditioner's."""

    alpha: torch.Tensor
    iterations: int
    residuals: list[float] = field(default_factory=list)
    residual: float = float("nan")
    diag_reg_absolute: float = 0.0
    rank: int = 0


class ConvergenceError(RuntimeError):
    """CG did not reach ``tol`` within ``max_iter``; ``.result`` holds the last iterate and its residuals."""

    def __init__(self, message: str, result: SolveResult):
        super().__init__(message)
        self.result = result


def _targets(y, n: int) -> tuple[np.ndarray, bool]:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    if not isinstance(y, np.ndarray) or not np.issubdtype(y.dtype, np.floating):
        raise TypeError(f"y must be a floating-point torch.Tensor or numpy array; got {type(y).__name__}")
    vector = y.ndim == 1
    y2 = y[:, None] if vector else y
    if y2.ndim != 2 or y2.shape[0] != n:
        raise ValueError(f"y must be (N,) or (N, O) with N = {n} as in the kernel; got shape {tuple(y.shape)}")
    if not np.isfinite(y2).all():
        raise ValueError("y contains NaN or Inf values")
    return y2.astype(np.float64), vector


def _landmarks_random(k: StreamedMatrix, rank: int, rng: np.random.Generator) -> np.ndarray:
    """F with K ≈ F Fᵀ from uniformly drawn landmarks S: F = K[:, S] W^{-1/2}, W = K[S, S] (one pass)."""
    index = np.sort(rng.choice(k.n, size=rank, replace=False))
    c = k.columns(index)
    return c @ _inverse_sqrt(c[index])


def _inverse_sqrt(w: np.ndarray) -> np.ndarray:
    """W^{-1/2} on W's numerical range (eigenvalues above N·ε·λ_max; the rest of W is rounding)."""
    evals, evecs = np.linalg.eigh((w + w.T) / 2)
    keep = evals > w.shape[0] * np.finfo(np.float64).eps * max(evals.max(), 0.0)
    return evecs[:, keep] / np.sqrt(evals[keep])


def _landmarks_pivoted(k: StreamedMatrix, rank: int, rng: np.random.Generator, passes: int = 4) -> np.ndarray:
    """Block randomly pivoted Cholesky (Chen et al. 2024): pivots drawn ∝ the residual diagonal, ``rank/passes``
    at a time, each block costing one pass over the tiles; returns F with K ≈ F Fᵀ."""
    residual = k.diagonal()
    f = np.zeros((k.n, 0))
    block = max(1, math.ceil(rank / passes))
    while f.shape[1] < rank and residual.sum() > 0:
        p = residual / residual.sum()
        size = min(block, rank - f.shape[1], int((p > 0).sum()))
        index = np.sort(rng.choice(k.n, size=size, replace=False, p=p))
        g = k.columns(index) - f @ f[index].T
        new = g @ _inverse_sqrt(g[index])
        f = np.concatenate([f, new], axis=1)
        residual = np.clip(residual - (new**2).sum(axis=1), 0.0, None)
    return f


class NystromPreconditioner:
    """P⁻¹ for P = F Fᵀ + λI through the Woodbury identity (see the module docstring)."""

    def __init__(self, f: np.ndarray, lam: float):
        u, s, _ = np.linalg.svd(f, full_matrices=False)
        self.u, self.scale, self.lam = u, 1.0 / (s**2 + lam), lam

    def __call__(self, r: np.ndarray) -> np.ndarray:
        ur = self.u.T @ r
        return self.u @ (self.scale[:, None] * ur) + (r - self.u @ ur) / self.lam


def solve(K, y, diag_reg: float = 0.0, *, method: str = "cg", preconditioner: str | None = "nystrom",
          rank: int = 1000, landmarks: str = "random", tol: float = 1e-6, max_iter: int = 500,
          diag_reg_absolute_scale: bool = False, seed: int = 0, threads: int | None = None, client=None,
          progress: bool = True) -> SolveResult:  # fmt: skip
    r"""Solve (K + λI) α = y by (preconditioned) conjugate gradients, streaming K's tiles.

    λ = ``diag_reg`` · mean(diag K), or ``diag_reg`` itself when ``diag_reg_absolute_scale`` (the convention of
    :func:`ntkit.predict.gp_inference` and ``gradient_descent_mse``, whose t = ∞ limit is K α on the training
    set). CG stops when ‖y − (K + λI) α‖ ≤ tol · ‖y‖ for every column of y.

    Parameters
    ----------
    K:
        The (N, N) train-train kernel: ``scale.kernel(...).ntk`` or ``.nngp`` (streamed from the store), or
        any square dask array.
    y:
        Targets (N,) or (N, O), torch or numpy; the columns are solved together (one pass per iteration).
    diag_reg:
        Ridge λ relative to the mean diagonal (≥ 0; 0 needs a positive definite K).
    method:
        "cg" (the only one).
    preconditioner:
        "nystrom" (default) or None (plain CG).
    rank:
        Landmarks of the Nyström preconditioner (at most N); the driver holds (N, rank) float64.
    landmarks:
        "random" (uniform, one pass) or "pivoted" (block randomly pivoted Cholesky, four passes).
    tol, max_iter:
        Relative residual to reach, and the iterations allowed.
    seed:
        Seed of the landmark draws.
    threads:
        Threads of the driver reading tiles (default: one per core) for the products when ``client`` is None, and
        for the preconditioner's passes and the diagonal always.
    client:
        None (the products run on the driver's threads), a scheduler address or a ``distributed.Client``: the CG
        products run on its workers, one task per row band of tiles returning a partial product, with the vector
        scattered once per product (for a store on disks the workers reach: a cluster's shared file system or
        object store). Only stores written by :func:`ntkit.scale.kernel`; a plain dask array ignores it.
    progress:
        Show a progress bar over iterations with the residual.

    Returns
    -------
    SolveResult with alpha (a float64 tensor shaped like y), iterations, residuals, residual.

    Raises
    ------
    TypeError
        K not a square dask array, y not a float tensor or array.
    ValueError
        y's length differs from K's, NaN in y, diag_reg < 0, an unknown method/preconditioner/landmarks,
        rank out of [1, N] or too large for the free memory, tol ≤ 0, max_iter < 1, an incomplete store.
    ConvergenceError
        (a RuntimeError) CG did not reach ``tol`` within ``max_iter``; the message names the residual reached.

    Examples
    --------
    >>> fit = scale.solve(K.ntk, y, diag_reg=1e-4, rank=200)  # doctest: +SKIP
    >>> fit.alpha.shape, fit.iterations  # doctest: +SKIP
    """
    if method != "cg":
        raise ValueError(f"method must be 'cg'; got {method!r}")
    if preconditioner not in _PRECONDITIONERS:
        raise ValueError(f"preconditioner must be 'nystrom' or None; got {preconditioner!r}")
    if landmarks not in _LANDMARKS:
        raise ValueError(f"landmarks must be 'random' or 'pivoted'; got {landmarks!r}")
    diag_reg = real_number("diag_reg", diag_reg, nonnegative=True)
    tol = real_number("tol", tol, positive=True)
    positive_int("max_iter", max_iter)
    if client is None:
        return _solve(StreamedMatrix(K, threads), y, diag_reg, preconditioner, rank, landmarks, tol, max_iter,
                      diag_reg_absolute_scale, seed, progress)  # fmt: skip
    from ntkit.scale._cluster import client_for

    with client_for(client) as c:
        return _solve(StreamedMatrix(K, threads, c), y, diag_reg, preconditioner, rank, landmarks, tol, max_iter,
                      diag_reg_absolute_scale, seed, progress)  # fmt: skip


def _solve(k: StreamedMatrix, y, diag_reg, preconditioner, rank, landmarks, tol, max_iter, diag_reg_absolute_scale,
           seed, progress) -> SolveResult:  # fmt: skip
    y, vector = _targets(y, k.n)
    if preconditioner is not None and (isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= k.n):
        raise ValueError(f"rank must be an int in [1, N = {k.n}]; got {rank!r}")
    if preconditioner is not None:
        _check_memory(k.n, rank)
    diag = k.diagonal()
    lam = float(diag_reg) * (1.0 if diag_reg_absolute_scale else float(diag.mean()))
    precondition = lambda r: r  # noqa: E731
    used_rank = 0
    if preconditioner == "nystrom":
        rng = np.random.default_rng(seed)
        f = (_landmarks_random if landmarks == "random" else _landmarks_pivoted)(k, rank, rng)
        if lam > 0:
            precondition = NystromPreconditioner(f, lam)
        else:  # no ridge: P = F Fᵀ + μI with μ the smallest kept Nyström eigenvalue keeps P invertible
            precondition = NystromPreconditioner(f, float(np.linalg.svd(f, compute_uv=False)[-1] ** 2) or 1.0)
        used_rank = f.shape[1]
    alpha, iterations, residuals = _cg(lambda v: k.matmul(v) + lam * v, y, precondition, tol, max_iter, progress)
    shape = (lambda a: a[:, 0]) if vector else (lambda a: a)
    norm = np.linalg.norm(y, axis=0)
    true = np.linalg.norm(y - k.matmul(alpha) - lam * alpha, axis=0) / np.where(norm > 0, norm, 1.0)
    result = SolveResult(torch.from_numpy(shape(alpha)), iterations, residuals, float(true.max()), lam, used_rank)
    if residuals[-1] > tol:
        raise ConvergenceError(f"CG did not converge: relative residual {residuals[-1]:.3g} after {iterations} "
                               f"iterations (max_iter={max_iter}), tol={tol:g}. Raise max_iter or diag_reg, or use "
                               "preconditioner='nystrom' with a larger rank", result)  # fmt: skip
    return result


def _check_memory(n: int, rank: int) -> None:
    """Refuse a preconditioner that cannot fit: K[:, S], F, and F's SVD (U and a work copy) are N × rank float64."""
    import psutil

    needed = 4 * n * rank * 8
    available = psutil.virtual_memory().available
    if needed > available:
        raise ValueError(f"rank={rank} needs about {needed / 2**30:.1f} GiB for the Nyström preconditioner of N = {n} "
                         f"(4·N·rank float64), but {available / 2**30:.1f} GiB are available; lower rank")  # fmt: skip


def _cg(matvec, y: np.ndarray, precondition, tol: float, max_iter: int, progress: bool):
    """Preconditioned CG on every column of y at once (one product per iteration); (alpha, iterations, residuals)."""
    from tqdm.auto import tqdm

    norm = np.linalg.norm(y, axis=0)
    norm = np.where(norm > 0, norm, 1.0)  # a zero column has the exact solution 0
    x = np.zeros_like(y)
    r = y.copy()
    z = precondition(r)
    p = z.copy()
    rz = (r * z).sum(axis=0)
    residuals = [float((np.linalg.norm(r, axis=0) / norm).max())]
    iterations = 0
    with tqdm(total=max_iter, unit="it", desc="CG", disable=not progress, dynamic_ncols=True) as bar:
        while residuals[-1] > tol and iterations < max_iter:
            ap = matvec(p)
            curvature = (p * ap).sum(axis=0)
            step = np.divide(rz, curvature, out=np.zeros_like(rz), where=curvature > 0)
            x += step * p
            r -= step * ap
            iterations += 1
            residuals.append(float((np.linalg.norm(r, axis=0) / norm).max()))
            if not np.isfinite(residuals[-1]):
                raise ValueError(f"CG's residual became {residuals[-1]} at iteration {iterations}: the kernel holds "
                                 "NaN or Inf (a tile missing or unreadable in the store?) or K + λI is not positive "
                                 "definite; check the store, or raise diag_reg")  # fmt: skip
            bar.update(1)
            bar.set_postfix(residual=f"{residuals[-1]:.2e}")
            z = precondition(r)
            rz_new = (r * z).sum(axis=0)
            p = z + np.divide(rz_new, rz, out=np.zeros_like(rz), where=rz > 0) * p
            rz = rz_new
    return x, iterations, residuals
