r"""Learning curves of kernel (ridge) regression from the kernel's spectrum: the eigenlearning equations.

Kernel ridge regression on n samples, f̂(x) = k(x, X)(K + δ I)⁻¹ y, with a kernel whose integral operator has
eigenvalues λ_i and a target f = Σ_i v_i φ_i (plus noise of variance ε²) has, averaged over the draw of the
training set and to leading order in 1/n, test error (Bordelon, Canatar & Pehlevan, *Spectrum dependent learning
curves in kernel regression and wide neural networks*, ICML 2020; Simon, Dickens, Karkada & DeWeese, *The
eigenlearning framework*, TMLR 2023):

.. math::  \sum_i \frac{λ_i}{λ_i + κ} + \frac{δ}{κ} = n, \qquad L_i = \frac{λ_i}{λ_i + κ}, \qquad
           E_0 = \frac{n}{n − \sum_i L_i^2},

.. math::  \mathrm{MSE}_{test} = E_0 \Big(\sum_i (1 − L_i)^2 v_i^2 + ε^2\Big), \qquad
           \mathrm{MSE}_{train} = \frac{δ^2}{n^2 κ^2}\,\mathrm{MSE}_{test}.

κ is the effective regularisation and L_i the learnability of mode i. Power-law spectra give power-law curves
(Spigler, Geiger & Wyart 2020; Bordelon et al. 2020 §5): with λ_k ∝ k^{−b} and v_k² ∝ k^{−c} by mode index,
ridgeless MSE ∝ n^{−min(c − 1, 2b)}.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import brentq


@dataclass(frozen=True)
class LearningCurve:
    """Predicted learning curve at each n.

    Attributes
    ----------
    n:
        (P,) sample sizes.
    kappa:
        (P,) effective regularisation κ (0 when δ = 0 and n ≥ the number of non-zero eigenvalues).
    learnability:
        (P, M) L_i = λ_i/(λ_i + κ) per mode (per eigenvalue group when ``multiplicities`` were given).
    e0:
        (P,) overfitting coefficient E₀ = n/(n − Σ L_i²) (inf at the interpolation peak n = #modes, δ = 0).
    test_mse, train_mse:
        (P,) predicted test and train mean squared error (test includes the noise ε²).
    """

    n: np.ndarray
    kappa: np.ndarray
    learnability: np.ndarray
    e0: np.ndarray
    test_mse: np.ndarray
    train_mse: np.ndarray


def _vector(name: str, value, *, ndim: int = 1) -> np.ndarray:
    try:
        arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence, numpy array or tensor of numbers; got "
                        f"{type(value).__name__}") from None  # fmt: skip
    arr = arr.reshape(-1) if ndim == 1 else arr
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf values")
    return arr


def _nonnegative_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise TypeError(f"{name} must be a number ≥ 0; got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number ≥ 0; got {value!r}")
    return float(value)


def _check_inputs(eigenvalues, target_coeffs, n, multiplicities):
    lam = _vector("eigenvalues", eigenvalues)
    if lam.size == 0:
        raise ValueError("eigenvalues must not be empty")
    if np.any(lam < 0):
        raise ValueError(f"eigenvalues must be non-negative (a kernel is positive semi-definite); the smallest is "
                         f"{lam.min():.3g} at index {int(lam.argmin())}")  # fmt: skip
    v = _vector("target_coeffs", target_coeffs, ndim=2)
    if v.ndim == 0 or v.shape[0] != lam.size or v.ndim > 2:
        raise ValueError(f"target_coeffs must have one coefficient per eigenvalue, shape ({lam.size},) or "
                         f"({lam.size}, outputs); got {v.shape}")  # fmt: skip
    power = v**2 if v.ndim == 1 else (v**2).sum(1)
    ns = _vector("n", n)
    if ns.size == 0 or np.any(ns <= 0):
        raise ValueError(f"n must hold sample sizes > 0; got {np.asarray(n).tolist()}")
    if multiplicities is None:
        mult = np.ones_like(lam)
    else:
        mult = _vector("multiplicities", multiplicities)
        if mult.shape != lam.shape or np.any(mult < 1) or np.any(mult != np.round(mult)):
            raise ValueError(f"multiplicities must be {lam.size} integers ≥ 1, one per eigenvalue; got "
                             f"shape {mult.shape}")  # fmt: skip
    return lam, power, ns, mult


def solve_kappa(eigenvalues: np.ndarray, n: float, ridge: float = 0.0, multiplicities: np.ndarray | None = None,
                tail_trace: float = 0.0) -> float:  # fmt: skip
    r"""κ ≥ 0 solving Σ_i m_i λ_i/(λ_i + κ) + (δ + T)/κ = n (m_i multiplicities, T the tail trace).

    The left side falls strictly in κ, from +∞ (or the number of non-zero modes when δ = T = 0) to 0, so the root
    is unique; it lies below κ_hi = (Σ m_i λ_i + δ + T)/n, where the left side is ≤ n. Brent's method
    (safeguarded: bisection whenever interpolation leaves the bracket) on log κ, to relative precision 1e-15.
    When δ = T = 0 and n ≥ the number of non-zero modes the equation has no positive root and κ = 0.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    mult = np.ones_like(lam) if multiplicities is None else np.asarray(multiplicities, dtype=np.float64)
    extra = ridge + tail_trace
    positive = lam > 0
    if extra == 0 and n >= mult[positive].sum():
        return 0.0
    lam, mult = lam[positive], mult[positive]

    def excess(log_kappa: float) -> float:
        kappa = math.exp(log_kappa)
        return float(np.sum(mult * lam / (lam + kappa)) + extra / kappa - n)

    hi = math.log((float(np.sum(mult * lam)) + extra) / n)
    lo = hi - 1.0
    while excess(lo) <= 0:  # ends: the left side → #modes > n or +∞ as κ → 0
        lo -= 4.0
    return math.exp(brentq(excess, lo, hi, xtol=1e-300, rtol=1e-15, maxiter=500))


def learning_curve(eigenvalues, target_coeffs, n, ridge: float = 0.0, noise: float = 0.0, *,
                   multiplicities=None, tail_trace: float = 0.0) -> LearningCurve:  # fmt: skip
    r"""Predicted test MSE of kernel ridge regression at each sample size n (eigenlearning).

    Solves Σ_i λ_i/(λ_i + κ) + δ/κ = n for κ, then L_i = λ_i/(λ_i + κ), E₀ = n/(n − Σ L_i²) and
    MSE = E₀(Σ_i (1 − L_i)² v_i² + ε²) (module docstring). The ridge δ is added to the n×n Gram matrix,
    f̂ = k(x, X)(K + δI)⁻¹y, and the λ_i are the eigenvalues of the integral operator (of K/n).

    Parameters
    ----------
    eigenvalues:
        (M,) λ_i ≥ 0 (e.g. ``spectrum(...).eigenvalues`` or ``sphere_spectrum(...).eigenvalues``).
    target_coeffs:
        (M,) or (M, O) v_i, the target's coefficients on the eigenfunctions (several outputs: their squares are
        summed). With ``multiplicities``, v_i² is the target's total power in eigenspace i.
    n:
        Sample size(s): a number or a sequence of numbers > 0.
    ridge:
        δ ≥ 0.
    noise:
        ε² ≥ 0, the **variance** of the label noise (it enters the test MSE too).
    multiplicities:
        (M,) integers ≥ 1: eigenvalue i is shared by this many modes (``sphere_spectrum(...).multiplicities``).
    tail_trace:
        Σ λ of modes not listed (``sphere_spectrum(...).tail``); it adds T/κ to the κ equation, exact to first
        order when those λ are ≪ κ. The target must have no power there.

    Returns
    -------
    LearningCurve

    Raises
    ------
    TypeError
        Arguments of the wrong type.
    ValueError
        Negative eigenvalues, n ≤ 0, target_coeffs not one per eigenvalue, bad multiplicities, NaN/Inf, ridge,
        noise or tail_trace < 0.

    References
    ----------
    Bordelon, Canatar & Pehlevan, ICML 2020, eq. 4–6; Simon et al., TMLR 2023, eq. 7–9 (the eigenlearning
    framework); Canatar, Bordelon & Pehlevan, Nature Communications 2021 (noise).

    Examples
    --------
    >>> import numpy as np
    >>> lam = 1.0 / np.arange(1, 1001) ** 2
    >>> curve = learning_curve(lam, np.sqrt(lam), [10, 100], ridge=1e-3)
    >>> bool(curve.test_mse[1] < curve.test_mse[0])
    True
    """
    lam, power, ns, mult = _check_inputs(eigenvalues, target_coeffs, n, multiplicities)
    delta = _nonnegative_number("ridge", ridge)
    eps2 = _nonnegative_number("noise", noise)
    tail = _nonnegative_number("tail_trace", tail_trace)
    kappa = np.array([solve_kappa(lam, m, delta, mult, tail) for m in ns])
    with np.errstate(divide="ignore", invalid="ignore"):
        learn = np.where(lam[None] > 0, lam[None] / (lam[None] + kappa[:, None]), 0.0)
        # the tail's Σ L_i² ≈ Σ (λ_i/κ)² is second order in the small λ_i/κ and left out
        denom = ns - (mult[None] * learn**2).sum(1)
        e0 = np.where(denom > 0, ns / np.where(denom > 0, denom, 1.0), np.inf)
        bias = ((1 - learn) ** 2 * power[None]).sum(1) + eps2
        test = np.where(bias > 0, e0 * bias, 0.0)
        train = np.where(kappa > 0, (delta / (ns * np.where(kappa > 0, kappa, 1.0))) ** 2 * test, 0.0)
    return LearningCurve(ns, kappa, learn, e0, test, train)


def scaling_exponent(n, mse, n_min: float | None = None, n_max: float | None = None) -> tuple[float, float]:
    r"""Fit MSE ≈ C·n^{−α} by least squares of log MSE on log n over n_min ≤ n ≤ n_max; returns (α, C).

    Apply it to a predicted curve (``learning_curve(...).test_mse``), a measured one, or to eigenvalues against
    their index (λ_k ∝ k^{−b} gives b). Points with MSE ≤ 0 are dropped; at least two must remain.

    Raises
    ------
    ValueError
        n and mse of different lengths, or fewer than two usable points.

    Examples
    --------
    >>> alpha, c = scaling_exponent([10, 100, 1000], [1.0, 0.1, 0.01])
    >>> round(alpha, 6), round(c, 6)
    (1.0, 10.0)
    """
    ns, err = _vector("n", n), _vector("mse", mse)
    if ns.shape != err.shape:
        raise ValueError(f"n and mse must have the same length; got {ns.size} and {err.size}")
    keep = (ns > 0) & (err > 0)
    if n_min is not None:
        keep &= ns >= n_min
    if n_max is not None:
        keep &= ns <= n_max
    if keep.sum() < 2:
        raise ValueError(f"scaling_exponent needs at least two points with n > 0 and mse > 0 in range; got "
                         f"{int(keep.sum())}")  # fmt: skip

    slope = log_log_slope(ns[keep].tolist(), err[keep].tolist())
    intercept = np.mean(np.log(err[keep])) - slope * np.mean(np.log(ns[keep]))
    return -slope, float(math.exp(intercept))


def predicted_exponent(eigenvalues, target_coeffs, index_min: int = 10, index_max: int | None = None) -> float:
    r"""The ridgeless learning-curve exponent α = min(c − 1, 2b) predicted from power-law fits λ_k ∝ k^{−b} and
    v_k² ∝ k^{−c} over mode indices k in [index_min, index_max] (Bordelon et al. 2020 §5; Spigler et al. 2020).

    Eigenvalues are taken in decreasing order with their coefficients; modes with v_k = 0 are left out of the
    target's fit."""
    lam = _vector("eigenvalues", eigenvalues)
    v = _vector("target_coeffs", target_coeffs)
    if v.shape != lam.shape:
        raise ValueError(f"target_coeffs must have one coefficient per eigenvalue ({lam.size}); got {v.size}")
    order = np.argsort(-lam, kind="stable")
    lam, power = lam[order], v[order] ** 2
    k = np.arange(1, lam.size + 1, dtype=np.float64)
    hi = index_max or lam.size
    b, _ = scaling_exponent(k, lam, index_min, hi)
    c, _ = scaling_exponent(k, power, index_min, hi)
    return min(c - 1.0, 2.0 * b)


def log_log_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope b of log y = a + b·log x: the exponent of a power law y ∝ x^b.

    b = Σ (u − ū)(v − v̄) / Σ (u − ū)² with u = log x, v = log y, in float64. Needs two distinct x.

    >>> round(log_log_slope([1, 4, 16], [3.0, 1.5, 0.75]), 12)
    -0.5
    """
    u = torch.as_tensor(list(x), dtype=torch.float64).log()
    v = torch.as_tensor(list(y), dtype=torch.float64).log()
    if u.numel() < 2 or u.numel() != v.numel() or float(u.max() - u.min()) == 0:
        raise ValueError(f"a slope needs at least two distinct x and one y per x; got x={list(x)}, y={list(y)}")
    u = u - u.mean()
    return float((u * (v - v.mean())).sum() / (u * u).sum())
