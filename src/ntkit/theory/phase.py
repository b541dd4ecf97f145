r"""Signal propagation in deep infinite-width MLPs: order, chaos, depth scales and the NTK's conditioning.

An MLP with weights W_std/√fan_in·W and biases b_std·b (σ_w = W_std, σ_b = b_std; the NTK and standard
parameterizations share these forward statistics) carries the variance q and correlation c of two inputs'
pre-activations from layer to layer (Poole et al., *Exponential expressivity in deep neural networks through
transient chaos*, NeurIPS 2016; Schoenholz, Gilmer, Ganguli & Sohl-Dickstein, *Deep information propagation*,
ICLR 2017):

.. math::  q' = σ_w^2 E[φ(u)^2] + σ_b^2, \qquad c' q^* = σ_w^2 E[φ(u)φ(v)] + σ_b^2,

u, v centred Gaussians of variance q* and correlation c. The variance reaches a fixed point q*. c = 1 is always
a fixed point; its slope χ₁ = σ_w² E[φ'(u)²] decides the phase: χ₁ < 1 ordered (all inputs' correlations → 1),
χ₁ > 1 chaotic (they → a c* < 1). Correlations approach their fixed point like e^{−l/ξ_c} with

.. math::  ξ_c = −1/\log χ_c, \qquad χ_c = σ_w^2 E[φ'(u)φ'(v)]\big|_{q^*, c^*},

which diverges on the order–chaos boundary; networks train up to a depth of about 6ξ_c (Schoenholz et al.
2017, Fig. 5). The NTK Θ' = K' + σ_w² E[φ'(u)φ'(v)]·Θ degenerates along the same lines: on m inputs with equal
norms and equal pairwise correlations its matrix is (Θ_d − Θ_o) I + Θ_o 11ᵀ, with condition number
(Θ_d + (m − 1)Θ_o)/(Θ_d − Θ_o), which explodes with depth in the ordered phase (Xiao, Pennington & Schoenholz,
*Disentangling trainability and generalization in deep neural networks*, ICML 2020, §3).

The Gaussian expectations are those of the activation's spec (``ntkit.infinite.activations``: closed forms for
ReLU, Erf, GELU, …; Gauss–Hermite quadrature for Tanh).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ntkit.infinite import Activation, Identity, LeakyReLU, ReLU, Tanh
from ntkit.infinite.layers import positive_int

#: Activation names accepted as strings; tanh uses a 96-node quadrature (error ~1e−9 at q ≲ 4), enough here.
ACTIVATION_NAMES = ("relu", "tanh", "erf", "gelu")
_HOMOGENEOUS = (ReLU, LeakyReLU, Identity)


def _activation(activation) -> Activation:
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str) and activation in ACTIVATION_NAMES:
        from ntkit.infinite import GELU, Erf

        return {"relu": ReLU, "erf": Erf, "gelu": GELU, "tanh": lambda: Tanh(degree=96)}[activation]()
    raise TypeError(f"activation must be one of {ACTIVATION_NAMES} or an ntkit activation spec (nk.Tanh(), …); "
                    f"got {activation!r}")  # fmt: skip


def _grid(name: str, values) -> torch.Tensor:
    arr = torch.as_tensor(np.asarray(values, dtype=np.float64)).reshape(-1)
    if arr.numel() == 0:
        raise ValueError(f"{name} must hold at least one value")
    if not bool(torch.isfinite(arr).all()) or bool((arr <= 0).any()):
        raise ValueError(f"{name} must hold finite values > 0 (standard deviations σ, not variances); got "
                         f"{arr.tolist()}")  # fmt: skip
    return arr


def _depths(depth) -> tuple[int, ...]:
    depths = (depth,) if isinstance(depth, int | np.integer) and not isinstance(depth, bool) else tuple(depth)
    return tuple(positive_int("depth", int(d) if isinstance(d, np.integer) else d) for d in depths)


def variance_fixed_point(activation, w2: torch.Tensor, b2: torch.Tensor, iterations: int = 100) -> torch.Tensor:
    """q* of q ↦ σ_w² E[φ(√q z)²] + σ_b² (elementwise over broadcast grids).

    Positively homogeneous φ (ReLU, LeakyReLU, identity) in closed form: q* = σ_b²/(1 − σ_w² E[φ(z)²]), or inf
    when σ_w² E[φ(z)²] ≥ 1 (the variance grows without bound). Others by bisection of h(q) = map(q) − q: h(σ_b²)
    ≥ 0, and the upper end doubles until h < 0 (at most 64 times; inf where it never does). For bounded φ (tanh,
    erf) the map is increasing and concave, so the root is unique and stable."""
    act = _activation(activation)
    w2, b2 = torch.broadcast_tensors(w2, b2)
    if isinstance(act, _HOMOGENEOUS):
        one = torch.ones((), dtype=torch.float64)
        slope = w2 * act.kernels(one, one, one)[0]
        return torch.where(slope < 1, b2 / (1 - slope).clamp_min(1e-300), torch.full_like(w2, math.inf))

    def excess(q: torch.Tensor) -> torch.Tensor:
        return w2 * act.kernels(q, q, q)[0] + b2 - q

    lo, hi = b2.clone(), (w2 + b2).clone()
    for _ in range(64):
        grow = excess(hi) >= 0
        if not bool(grow.any()):
            break
        lo, hi = torch.where(grow, hi, lo), torch.where(grow, 2 * hi, hi)
    bounded = excess(hi) < 0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        up = excess(mid) >= 0
        lo, hi = torch.where(up, mid, lo), torch.where(up, hi, mid)
        if bool(((hi - lo) <= 4 * torch.finfo(torch.float64).eps * hi).all()):
            break
    return torch.where(bounded, (lo + hi) / 2, torch.full_like(hi, math.inf))


def correlation_fixed_point(activation, w2: torch.Tensor, b2: torch.Tensor, q: torch.Tensor,
                            chi1: torch.Tensor, iterations: int = 60) -> torch.Tensor:  # fmt: skip
    r"""c*: 1 where χ₁ ≤ 1; else the root in [0, 1) of g(c) − c, g(c) = (σ_w² E[φ(u)φ(v)] + σ_b²)/q*, by
    bisection. g is increasing and convex on [0, 1] (its slope σ_w² E[φ'φ'] grows with c), g(0) ≥ 0 (E[φ(u)]² ≥ 0)
    and g(1) = 1 with g'(1) = χ₁ > 1, so there is exactly one root in [0, 1)."""
    act = _activation(activation)
    chaotic = chi1 > 1
    lo, hi = torch.zeros_like(q), torch.ones_like(q)
    q_safe = torch.where(torch.isfinite(q), q, torch.ones_like(q))
    for _ in range(iterations):
        mid = (lo + hi) / 2
        g = (w2 * act.kernels(q_safe, mid * q_safe, q_safe)[0] + b2) / q_safe
        above = g > mid
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    return torch.where(chaotic, (lo + hi) / 2, torch.ones_like(q))


@dataclass(frozen=True)
class PhaseDiagram:
    """Mean-field quantities on a (W_std, b_std) grid; arrays are (len(W_std), len(b_std)), ``ntk_condition`` has
    a last axis over ``depths``.

    Attributes
    ----------
    W_std, b_std:
        The grids (σ_w, σ_b); σ_w² and σ_b² are their squares.
    q_star:
        Fixed-point pre-activation variance (inf where it diverges).
    chi1:
        χ₁ = σ_w² E[φ'(u)²] at q*: < 1 ordered, > 1 chaotic (for ReLU-like φ, where q* = inf, the rate at which
        gradients explode; inf for other φ there).
    c_star:
        Fixed-point correlation (1 in the ordered phase and where q* = inf).
    chi_c:
        σ_w² E[φ'(u)φ'(v)] at (q*, c*); equals χ₁ in the ordered phase.
    xi:
        Depth scale ξ_c = 1/|log χ_c| (inf on the boundary; where q* = inf, χ_c = χ₁).
    depths, ntk_condition:
        Depths (hidden layers) and the NTK's condition number there on ``n_samples`` inputs of unit per-feature
        variance with pairwise correlation ``input_correlation`` (inf when it exceeds 1/float64 precision).
    """

    W_std: np.ndarray
    b_std: np.ndarray
    q_star: np.ndarray
    chi1: np.ndarray
    c_star: np.ndarray
    chi_c: np.ndarray
    xi: np.ndarray
    depths: tuple[int, ...]
    ntk_condition: np.ndarray

    @property
    def chaotic(self) -> np.ndarray:
        """True where χ₁ > 1."""
        return self.chi1 > 1

    def max_trainable_depth(self, factor: float = 6.0) -> np.ndarray:
        """factor·ξ_c (Schoenholz et al. 2017 find networks train up to about 6ξ_c)."""
        return factor * self.xi


def _depth_scale(chi_c: torch.Tensor) -> torch.Tensor:
    """ξ_c = −1/log χ_c, inf where χ_c = 1 (|·|: χ_c ≤ 1 at a stable fixed point, up to rounding)."""
    log = torch.log(chi_c)
    return torch.where(log != 0, 1.0 / torch.where(log != 0, log, torch.ones_like(log)).abs(),
                       torch.full_like(log, math.inf))  # fmt: skip


def ntk_condition_numbers(activation, w2: torch.Tensor, b2: torch.Tensor, depths: Sequence[int],
                          n_samples: int = 16, input_correlation: float = 0.2) -> torch.Tensor:  # fmt: skip
    r"""(…, len(depths)) condition number of the infinite-width NTK of an MLP with ``depth`` hidden layers and a
    Linear readout, on ``n_samples`` inputs with ⟨x, x⟩/d = 1 and ⟨x, x'⟩/d = ``input_correlation``.

    Two-input recursion of the NTK parameterization (module docstring): first layer K = σ_w²·(1 or c₀) + σ_b²,
    Θ = K; then per layer K' = σ_w² E[φ(u)φ(v)] + σ_b², Θ' = K' + σ_w² E[φ'(u)φ'(v)] Θ, for the diagonal (d) and
    off-diagonal (o) entries. The matrix (Θ_d − Θ_o)I + Θ_o 11ᵀ has eigenvalues Θ_d − Θ_o and Θ_d + (m − 1)Θ_o;
    where |Θ_d − Θ_o| is below 64 ε·Θ_d (float64 cannot resolve it) the condition number is inf."""
    act = _activation(activation)
    w2, b2 = torch.broadcast_tensors(torch.as_tensor(w2, dtype=torch.float64), torch.as_tensor(b2, dtype=torch.float64))
    kd = w2 + b2
    ko = w2 * input_correlation + b2
    td, to = kd.clone(), ko.clone()
    out, layer = [], 0
    for depth in sorted(set(depths)):
        while layer < depth:
            phi_d, dphi_d = act.kernels(kd, kd, kd)
            phi_o, dphi_o = act.kernels(kd, ko, kd)
            kd, ko = w2 * phi_d + b2, w2 * phi_o + b2
            td, to = kd + w2 * dphi_d * td, ko + w2 * dphi_o * to
            layer += 1
        # after `depth` activations and the Linear that follows each one (the last is the readout)
        rd, ro = td, to
        small, big = rd - ro, rd + (n_samples - 1) * ro
        lo, hi = torch.minimum(small.abs(), big.abs()), torch.maximum(small.abs(), big.abs())
        resolved = lo > 64 * torch.finfo(torch.float64).eps * rd.abs()
        out.append((depth, torch.where(resolved, hi / torch.where(resolved, lo, torch.ones_like(lo)),
                                       torch.full_like(lo, math.inf))))  # fmt: skip
    table = dict(out)
    return torch.stack([table[d] for d in depths], -1)


def phase_diagram(activation, W_std_grid, b_std_grid, depth: int | Sequence[int] = 50, *, n_samples: int = 16,
                  input_correlation: float = 0.2) -> PhaseDiagram:  # fmt: skip
    r"""Order/chaos quantities of deep infinite-width MLPs over a grid of (σ_w, σ_b).

    For each σ_w in ``W_std_grid`` and σ_b in ``b_std_grid``: q*, χ₁, c*, χ_c, the depth scale ξ_c = −1/log χ_c
    and the NTK's condition number at ``depth`` hidden layers (module docstring).

    Parameters
    ----------
    activation:
        "relu", "tanh", "erf", "gelu", or an activation spec (``nk.Tanh()``, ``nk.LeakyReLU(0.1)``, …).
    W_std_grid, b_std_grid:
        Weight and bias standard deviations σ_w, σ_b (> 0). Pass √ of variances for a (σ_w², σ_b²) grid.
    depth:
        Hidden layers at which to evaluate the NTK's conditioning (an int or a sequence).
    n_samples, input_correlation:
        The dataset for the condition number: this many inputs with this pairwise correlation (in [0, 1)).

    Returns
    -------
    PhaseDiagram

    Raises
    ------
    TypeError
        Unknown activation.
    ValueError
        Grid values ≤ 0 or not finite, depth not a positive int, n_samples < 2, input_correlation outside [0, 1).

    References
    ----------
    Poole et al., NeurIPS 2016; Schoenholz et al., ICLR 2017, eq. 3–9; Xiao, Pennington & Schoenholz, ICML 2020.

    Examples
    --------
    >>> pd = phase_diagram("relu", [1.0, 1.4142135623730951], [0.1], depth=10)
    >>> [round(float(c), 6) for c in pd.chi1[:, 0]]
    [0.5, 1.0]
    """
    act = _activation(activation)
    w = _grid("W_std_grid", W_std_grid)
    b = _grid("b_std_grid", b_std_grid)
    depths = _depths(depth)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"n_samples must be an int ≥ 2; got {n_samples!r}")
    if not (0 <= input_correlation < 1):
        raise ValueError(f"input_correlation must be in [0, 1); got {input_correlation!r}")
    w2, b2 = (w**2)[:, None], (b**2)[None, :]
    w2, b2 = torch.broadcast_tensors(w2, b2)
    q = variance_fixed_point(act, w2, b2)
    finite = torch.isfinite(q)
    q_safe = torch.where(finite, q, torch.ones_like(q))
    homogeneous = isinstance(act, _HOMOGENEOUS)
    # homogeneous φ: E[φ'(u)²] does not depend on q, so χ₁ is defined even where q* = inf
    chi1 = torch.where(finite | homogeneous, w2 * act.kernels(q_safe, q_safe, q_safe)[1], torch.full_like(q, math.inf))
    c = correlation_fixed_point(act, w2, b2, q, chi1)
    chi_c = torch.where(finite, w2 * act.kernels(q_safe, c * q_safe, q_safe)[1], chi1)
    xi = _depth_scale(chi_c)
    cond = ntk_condition_numbers(act, w2, b2, depths, n_samples, input_correlation)
    arrays = (q, chi1, c, chi_c, xi, cond)
    return PhaseDiagram(w.numpy(), b.numpy(), *(a.numpy() for a in arrays[:5]), depths, arrays[5].numpy())


def max_trainable_depth(activation, W_std, b_std, factor: float = 6.0) -> np.ndarray:
    r"""factor·ξ_c, the depth up to which Schoenholz et al. (2017) find networks at (σ_w, σ_b) trainable
    (factor 6 from their Fig. 5); arrays over the grids ``W_std`` × ``b_std`` (scalars give a 1×1 array).

    Examples
    --------
    >>> round(float(max_trainable_depth("relu", 1.0, 0.1)[0, 0]), 6)  # ReLU, σ_w² = 1: χ₁ = 1/2, 6ξ = 6/log 2
    8.65617
    """
    return phase_diagram(activation, W_std, b_std, depth=1).max_trainable_depth(factor)
