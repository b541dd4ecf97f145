"""Activations: closed-form Gaussian expectations, and Gauss-Hermite quadrature for any other function.

For a centred Gaussian pair (u, v) with covariance [[Σ11, Σ12], [Σ12, Σ22]], an elementwise φ carries the
NNGP kernel to K' = E[φ(u)φ(v)] and the NTK to Θ' = Θ · E[φ'(u)φ'(v)] (Jacot et al., 2018; Lee et al., 2019).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from ntkit._validation import real_number
from ntkit.infinite import _fused
from ntkit.infinite.kernel import (
    Kernel,
    cached_self_map,
    pair_variances,
    self_pairs,
    set_self_pairs,
    spatial_diagonal,
)
from ntkit.infinite.layers import Layer
from ntkit.modules import Elementwise as ElementwiseModule

KernelPair = tuple[torch.Tensor, torch.Tensor]


def relu_kernels(cov11: torch.Tensor, cov12: torch.Tensor, cov22: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""E[relu(u) relu(v)] and E[relu'(u) relu'(v)], the arc-cosine kernels of degree 1 and 0.

    With θ = arccos(Σ12 / √(Σ11 Σ22)) (Cho & Saul, *Kernel Methods for Deep Learning*, NeurIPS 2009):

    .. math::  E[\mathrm{relu}(u)\mathrm{relu}(v)] = \frac{\sqrt{\Sigma_{11}\Sigma_{22}}}{2\pi}
               \big(\sin\theta + (\pi - \theta)\cos\theta\big), \qquad
               E[\mathrm{relu}'(u)\mathrm{relu}'(v)] = \frac{\pi - \theta}{2\pi}.

    The cosine is clipped to [−1, 1] only to undo rounding; inputs are broadcast together. Written for the
    memory traffic: four full-size tensors in all and every later step in place, with sin θ = √(1 − cos²θ) and
    sin θ + (π − θ) cos θ each one fused multiply-add pass (``addcmul``). On the diagonal (cos θ = 1 exactly)
    every step is exact, as in the plain formulas. A zero variance (an all-zero input without bias) takes the
    exact limit: the unit is identically 0, so K' = 0, and the cosine is set to 0 so that K̇ stays finite (the NTK
    through that unit is 0·K̇ = 0, as in the finite network).
    """
    if _differentiated(cov11, cov12, cov22):
        return _relu_kernels_differentiable(cov11, cov12, cov22)
    norm = torch.mul(cov11, cov22).sqrt_()
    cos = torch.div(cov12, norm)
    if bool((cov11 == 0).any()) or bool((cov22 == 0).any()):  # small per-example tensors: a cheap test
        # only where the norm is 0: a NaN covariance elsewhere stays NaN (and kernel() then raises)
        cos = torch.where(norm == 0, cos.nan_to_num(0.0, 1.0, -1.0), cos)
    cos.clamp_(-1.0, 1.0)
    # The snap to cos θ = ±1, in place (threshold_: one cheap pass each): θ ≤ θ_snap is θ = 0, π − θ ≤ θ_snap is
    # θ = π, and sin²θ = 1 − cos²θ ≤ sin²θ_snap is sin θ = 0, so a self-pair whose cosine rounded to 1 − δ is exact.
    threshold = torch.nn.functional.threshold_
    snap = snap_angle(cos.dtype)
    pi_minus_theta = threshold(torch.arccos(cos), snap, 0.0).neg_().add_(math.pi)
    threshold(pi_minus_theta, snap, 0.0)
    sin_squared = threshold(torch.addcmul(norm.new_ones(()), cos, cos, value=-1.0), math.sin(snap) ** 2, 0.0)
    bracket = sin_squared.sqrt_().addcmul_(cos, pi_minus_theta)
    k1 = norm.div_(2 * math.pi).mul_(bracket)
    k0 = pi_minus_theta.div_(2 * math.pi)
    return k1, k0


#: Cosines within this many machine epsilons of ±1 are taken as ±1 exactly. Identical inputs reach the cosine
#: through two reductions (x·x' and x·x) that may round differently, by a few ulps per layer, and the arc-cosine
#: kernels turn an error δ in cos θ = 1 into √(2δ)/(2π) in K̇. Snapping costs at most the same √(2·16ε)/(2π)
#: ≈ 3e-8 for distinct inputs that close, whose cosine float64 cannot resolve any better (neural-tangents
#: likewise treats the diagonal with a √ε margin).
COSINE_SNAP_EPS = 16


def _safe_cosine(cov12: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """cos θ = Σ12 / √(Σ11 Σ22), clipped to [−1, 1] to undo rounding, snapped to ±1 within
    ``COSINE_SNAP_EPS``·ε of it, and 0 where a variance is 0 (0/0, the exact limit's choice is immaterial)."""
    cos = torch.div(cov12, norm).nan_to_num_(0.0, 1.0, -1.0).clamp_(-1.0, 1.0)
    edge = 1.0 - COSINE_SNAP_EPS * torch.finfo(cos.dtype).eps
    return torch.where(cos.abs() > edge, torch.sign(cos), cos)


def snap_angle(dtype: torch.dtype) -> float:
    """The angle below which θ (or π − θ) is taken as exactly 0: arccos(1 − COSINE_SNAP_EPS·ε) ≈ √(2·16ε)."""
    return math.acos(1.0 - COSINE_SNAP_EPS * torch.finfo(dtype).eps)


def _in_float64(kernels):
    """Evaluate a closed form in float64 and return the input's dtype: used where float32 cancels catastrophically
    (Erf and GELU at large variances: (1 + 2Σ11)(1 + 2Σ22) − 4Σ12² loses every digit once Σ ~ 1e4)."""

    def wrapped(cov11, cov12, cov22):
        dtype = cov12.dtype
        if dtype == torch.float64:
            return kernels(cov11, cov12, cov22)
        k, k_dot = kernels(cov11.double(), cov12.double(), cov22.double())
        return k.to(dtype), k_dot.to(dtype)

    wrapped.__doc__ = kernels.__doc__
    return wrapped


def _determinant(cov11, cov12, cov22) -> torch.Tensor:
    """Σ11Σ22 − Σ12² ≥ 0, clipped at 0 to undo rounding (it is exactly 0 on self-pairs)."""
    return (cov11 * cov22 - cov12 * cov12).clamp_(min=0.0)


def _differentiated(*tensors: torch.Tensor) -> bool:
    """True when autograd records these tensors (reverse mode) or they carry forward-mode tangents."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return True
    return any(fwAD.unpack_dual(t).tangent is not None for t in tensors)


def _relu_kernels_differentiable(cov11, cov12, cov22) -> KernelPair:
    """:func:`relu_kernels` without in-place steps, for autograd (kernel hyperparameters that require grad).

    arccos has an infinite slope at cos θ = ±1 although both kernels are smooth there in the covariances
    (K₁ = √(Σ11Σ22)/2 and K₀ = 1/2 at cos θ = 1, both 0 at cos θ = −1), so those entries take their exact
    limits and the formula sees a harmless cos θ = 0 in their place: no NaN gradient on the diagonal. The cosine
    is the same snapped one as in :func:`relu_kernels`, so both give the same values.
    """
    norm = torch.sqrt(cov11 * cov22)
    cos = _safe_cosine(cov12, norm)
    edge = cos.abs() >= 1.0
    safe = torch.where(edge, torch.zeros_like(cos), cos)
    theta = torch.arccos(safe)
    k1 = norm / (2 * math.pi) * (torch.sqrt(1 - safe**2) + (math.pi - theta) * safe)
    k0 = (math.pi - theta) / (2 * math.pi)
    upper = cos >= 1.0
    k1 = torch.where(edge, torch.where(upper, norm / 2, torch.zeros_like(norm)), k1)
    k0 = torch.where(edge, torch.where(upper, torch.full_like(k0, 0.5), torch.zeros_like(k0)), k0)
    return k1, k0


def leaky_relu_kernels(cov11, cov12, cov22, negative_slope: float) -> KernelPair:
    r"""φ(x) = max(x, 0) + α·min(x, 0) = relu(x) − α·relu(−x). With J₁ the degree-1 arc-cosine kernel and
    θ the angle between u and v, (−u, −v) has angle θ and (u, −v) has angle π − θ, so

    .. math::  E[φ(u)φ(v)] = (1 + α^2) J_1(θ) − 2α J_1(π − θ),\qquad
               E[φ'(u)φ'(v)] = (1 + α^2)\frac{π − θ}{2π} + 2α\frac{θ}{2π}.
    """
    a = negative_slope
    norm = torch.sqrt(cov11 * cov22)
    cos = _safe_cosine(cov12, norm)
    theta, sin = torch.arccos(cos), torch.sqrt(1 - cos**2)
    j1 = norm / (2 * math.pi) * (sin + (math.pi - theta) * cos)
    j1_flipped = norm / (2 * math.pi) * (sin - theta * cos)
    k = (1 + a**2) * j1 - 2 * a * j1_flipped
    k_dot = ((1 + a**2) * (math.pi - theta) + 2 * a * theta) / (2 * math.pi)
    return k, k_dot


@_in_float64
def erf_kernels(cov11, cov12, cov22) -> KernelPair:
    r"""Williams, *Computing with infinite networks*, NeurIPS 1997:

    .. math::  E[\mathrm{erf}(u)\mathrm{erf}(v)] = \frac{2}{π}\arcsin\frac{2Σ_{12}}{\sqrt{(1+2Σ_{11})(1+2Σ_{22})}}

    .. math::  E[\mathrm{erf}'(u)\mathrm{erf}'(v)] = \frac{4}{π}\big((1+2Σ_{11})(1+2Σ_{22}) − 4Σ_{12}^2\big)^{-1/2}.

    The last bracket is evaluated as 1 + 2(Σ11 + Σ22) + 4(Σ11Σ22 − Σ12²), whose terms are all ≥ 0 (no
    cancellation), in float64 whatever the input dtype.
    """
    prod = (1 + 2 * cov11) * (1 + 2 * cov22)
    k = 2 / math.pi * torch.arcsin((2 * cov12 / torch.sqrt(prod)).clamp(-1.0, 1.0))
    k_dot = 4 / math.pi / torch.sqrt(1 + 2 * (cov11 + cov22) + 4 * _determinant(cov11, cov12, cov22))
    return k, k_dot


@_in_float64
def gelu_kernels(cov11, cov12, cov22) -> KernelPair:
    r"""Exact GELU, φ(x) = x Φ(x) (Tsuchida, Pearce, van der Heide, Roosta & Gallagher, *Avoiding kernel fixed
    points: computing with ELU and GELU infinite networks*, AAAI 2021; the same closed form as neural-tangents).
    With P = Σ11Σ22, P₁ = (1+Σ11)(1+Σ22), Δ = √(P₁ − Σ12²) and ψ = atan2(Σ12, Δ):

    .. math::  K' = \frac{Σ_{12}}{4} + \frac{1}{2π}\Big(\frac{Σ_{12}^2 + PΔ^2}{P_1 Δ} + Σ_{12} ψ\Big),\qquad
               \dot K = \frac14 + \frac{ψ}{2π} + \frac{Σ_{12}}{2πΔ}\Big(\frac{1}{Δ^2} + \frac{1 − P}{P_1} + 1\Big).

    Δ² = 1 + Σ11 + Σ22 + (Σ11Σ22 − Σ12²) is summed from non-negative terms, in float64 whatever the input dtype.
    """
    prod, prod1 = cov11 * cov22, (1 + cov11) * (1 + cov22)
    delta_sq = 1 + cov11 + cov22 + _determinant(cov11, cov12, cov22)
    delta = torch.sqrt(delta_sq)
    psi = torch.atan2(cov12, delta)
    k = cov12 / 4 + ((cov12**2 + prod * delta_sq) / (prod1 * delta) + cov12 * psi) / (2 * math.pi)
    k_dot = 0.25 + psi / (2 * math.pi) + cov12 / (2 * math.pi * delta) * (1 / delta_sq + (1 - prod) / prod1 + 1)
    return k, k_dot


def sin_kernels(cov11, cov12, cov22) -> KernelPair:
    r"""sin u sin v = ½[cos(u − v) − cos(u + v)] and E[cos w] = e^{−Var(w)/2} give

    .. math::  E[\sin u \sin v] = e^{−(Σ_{11}+Σ_{22})/2}\sinh Σ_{12},\qquad
               E[\cos u \cos v] = e^{−(Σ_{11}+Σ_{22})/2}\cosh Σ_{12}.

    Evaluated as ½(e^{Σ12 − m} ∓ e^{−Σ12 − m}) with m = (Σ11 + Σ22)/2 ≥ |Σ12|: both exponents are ≤ 0, so large
    variances give 0 instead of inf·0 = NaN.
    """
    mean_var = (cov11 + cov22) / 2
    up, down = torch.exp(cov12 - mean_var), torch.exp(-cov12 - mean_var)
    return (up - down) / 2, (up + down) / 2


def identity_kernels(cov11, cov12, cov22) -> KernelPair:
    """φ(x) = x: K' = Σ12, K̇ = 1."""
    return cov12 + 0 * (cov11 + cov22), torch.ones_like(cov12 + 0 * (cov11 + cov22))


#: Above this variance (of either input) the Gaussian expectations switch from one Gauss-Hermite grid to graded
#: composite Gauss-Legendre panels, which keep their accuracy at any variance (see quadrature_kernels).
GRADED_ABOVE = 1.0
#: Gauss-Legendre nodes per panel, and the half-width (in standard deviations) beyond which the Gaussian's mass,
#: erfc(8.5/√2) ≈ 2e-17, is below float64's resolution.
PANEL_NODES, GAUSSIAN_REACH = 16, 8.5


def _graded_panels(levels: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights, on a unit scale, of composite Gauss-Legendre panels graded away from 0 on both sides:
    [0, 1], [1, 2], [2, 4], …, [2^(levels−2), 2^(levels−1)] and their mirror images, PANEL_NODES nodes each."""
    t, w = np.polynomial.legendre.leggauss(PANEL_NODES)
    edges = np.concatenate([[0.0], 2.0 ** np.arange(levels)])
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    pos = (mid[:, None] + half[:, None] * t[None, :]).ravel()
    wts = (half[:, None] * w[None, :]).ravel()
    pos, wts = np.concatenate([-pos[::-1], pos]), np.concatenate([wts[::-1], wts])
    return torch.as_tensor(pos, dtype=dtype, device=device), torch.as_tensor(wts, dtype=dtype, device=device)


def _normal_pdf(z: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def quadrature_kernels(fn: Callable[[torch.Tensor], torch.Tensor], degree: int = 256):
    r"""E[φ(u)φ(v)] and E[φ'(u)φ'(v)] by quadrature, for any elementwise φ, accurate at any variance.

    Write u = σ₁z₁ and v = σ₂(ρz₁ + s z₂) with z ~ N(0, I₂), σ² the variances, ρ = Σ12/(σ₁σ₂) and s = √(1−ρ²).

    * Both variances ≤ ``GRADED_ABOVE``: a ``degree``-node probabilists' Gauss-Hermite rule in each of z₁, z₂.
      The error falls geometrically with the degree; for tanh at unit variance it is ~1e-7 at 64 nodes, ~1e-11
      at 128 and ~1e-14 at 256 (the default).
    * Larger variances: activations change over |u| ~ 1, which is |z₁| ~ 1/σ₁, far finer than a Hermite grid
      resolves (256 nodes are 0.4% off for erf at variance 40 and 100% off in E[φ'φ'] at 1000). There the outer
      integral runs over composite Gauss-Legendre panels graded geometrically away from z₁ = 0, the first panel
      h₁ = min(1, 1/σ₁) wide, and for every outer node the inner integral over z₂ uses panels graded away from
      the point where v = 0, z₂* = −ρz₁/s, the first h₂ = min(1, 1/(σ₂s)) wide (around 0 when σ₂s ≤ 1, where
      the inner integrand is smooth on the Gaussian's own scale). Each panel is PANEL_NODES-point
      Gauss-Legendre with the Gaussian density in the weight, and the panels reach ±GAUSSIAN_REACH standard
      deviations. The number of panels grows like log₂ σ; against the closed forms of erf and GELU the relative
      error is ≲1e-14 up to variance 100 and ≲3e-11 at 1e3 to 1e4 (tests/infinite/test_exactness.py), where
      the 256-node Hermite rule was 8% (erf, variance 40) and 1.2% (GELU, variance 80) off.

    φ' comes from autograd. Entries are processed in chunks to bound memory.
    """
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 2:
        raise ValueError(f"degree must be an int ≥ 2; got {degree!r}")
    nodes_np, weights_np = np.polynomial.hermite_e.hermegauss(degree)
    weights_np = weights_np / weights_np.sum()

    def derivative(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(fn(x).sum(), x)
        return grad

    def both(u: torch.Tensor, v: torch.Tensor, weight: torch.Tensor) -> KernelPair:
        return (weight * fn(u) * fn(v)).sum((1, 2)), (weight * derivative(u) * derivative(v)).sum((1, 2))

    def hermite(c11, c12, c22) -> KernelPair:
        c11, c12, c22 = (c.view(-1, 1, 1) for c in (c11, c12, c22))
        z = torch.as_tensor(nodes_np, dtype=c12.dtype, device=c12.device)
        w = torch.as_tensor(weights_np, dtype=c12.dtype, device=c12.device)
        rho = _safe_cosine(c12, torch.sqrt(c11 * c22))
        u = torch.sqrt(c11) * z.view(1, -1, 1)
        v = torch.sqrt(c22) * (rho * z.view(1, -1, 1) + torch.sqrt(1 - rho**2) * z.view(1, 1, -1))
        return both(u, v, w.view(1, -1, 1) * w.view(1, 1, -1))

    def graded(c11, c12, c22) -> KernelPair:
        sigma1, sigma2 = torch.sqrt(c11), torch.sqrt(c22)
        rho = _safe_cosine(c12, sigma1 * sigma2)
        s = torch.sqrt(1 - rho**2)
        h1 = torch.clamp(1 / sigma1, max=1.0)
        sharp = sigma2 * s > 1  # the inner integrand changes faster than the Gaussian: panels around v = 0
        h2 = torch.where(sharp, 1 / (sigma2 * s).clamp(min=1.0), torch.ones_like(s))
        levels = 1 + math.ceil(math.log2((2 * GAUSSIAN_REACH + 1) / float(torch.minimum(h1, h2).min())))
        pos, wts = _graded_panels(levels, c12.dtype, c12.device)
        z1 = h1.view(-1, 1) * pos.view(1, -1)  # (E, P)
        w1 = h1.view(-1, 1) * wts.view(1, -1) * _normal_pdf(z1)
        ratio = (-rho / s.clamp(min=torch.finfo(s.dtype).tiny)).view(-1, 1)
        center = torch.where(sharp.view(-1, 1), ratio * z1, torch.zeros_like(z1))
        center = center.clamp(-GAUSSIAN_REACH - 1, GAUSSIAN_REACH + 1).unsqueeze(2)  # (E, P, 1)
        z2 = center + h2.view(-1, 1, 1) * pos.view(1, 1, -1)  # (E, P, P)
        w2 = h2.view(-1, 1, 1) * wts.view(1, 1, -1) * _normal_pdf(z2)
        u = (sigma1.view(-1, 1) * z1).unsqueeze(2)
        v = sigma2.view(-1, 1, 1) * (rho.view(-1, 1, 1) * z1.unsqueeze(2) + s.view(-1, 1, 1) * z2)
        return both(u, v, w1.unsqueeze(2) * w2)

    def kernels(cov11, cov12, cov22) -> KernelPair:
        cov11, cov12, cov22 = torch.broadcast_tensors(cov11, cov12, cov22)
        flat = [c.reshape(-1) for c in (cov11, cov12, cov22)]
        k, k_dot = torch.empty_like(flat[1]), torch.empty_like(flat[1])
        wide = torch.maximum(flat[0], flat[2]) > GRADED_ABOVE
        for rule, mask, points in ((hermite, ~wide, degree**2), (graded, wide, 4096 * PANEL_NODES)):
            index = mask.nonzero().view(-1)
            chunk = max(1, (1 << 22) // points)
            for start in range(0, index.numel(), chunk):
                rows = index[start : start + chunk]
                k[rows], k_dot[rows] = rule(*(c[rows] for c in flat))
        return k.reshape(cov12.shape), k_dot.reshape(cov12.shape)

    return kernels


# ---------------------------------------------------------------------------------------------------------------
# Activation layer specs


class Activation(Layer):
    """An elementwise nonlinearity: K' = E[φ(u)φ(v)], Θ' = Θ·E[φ'(u)φ'(v)] at every pair of positions."""

    fresh = False
    name = "Activation"

    def kernels(self, cov11: torch.Tensor, cov12: torch.Tensor, cov22: torch.Tensor) -> KernelPair:
        raise NotImplementedError

    def function(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{self.name}()"

    def transform(self, k: Kernel) -> Kernel:
        if not k.is_gaussian:
            raise ValueError(
                f"{self!r} needs Gaussian pre-activations as its input, but it gets the raw input, another "
                "activation's output, a Flatten or a concatenation, whose per-feature kernel is not that of one "
                "Gaussian; put an nk.Linear or nk.Conv layer directly before it, as in a real network"
            )
        s = k.spatial_dims
        v1 = spatial_diagonal(k.var1, s)
        v2 = v1 if k.var2 is None else spatial_diagonal(k.var2, s)
        var1, var1_dot = cached_self_map(self, k.var1, lambda t: self._pair_kernels(v1, t, v1, None, s, True))
        var2 = (
            None
            if k.var2 is None
            else cached_self_map(self, k.var2, lambda t: self._pair_kernels(v2, t, v2, None, s, True))[0]
        )
        nngp, ntk = self._pair_kernels(v1, k.nngp, v2, k.ntk, s)
        ntk = None if k.ntk is None else ntk  # without Θ the second is K̇, which nothing after needs
        if k.var2 is None:  # self-pairs from the self-covariances: exact, whatever the cross product's rounding
            set_self_pairs(nngp, var1)
            if ntk is not None:
                set_self_pairs(ntk, var1_dot * self_pairs(k.ntk))
        return k.replace(nngp=nngp, ntk=ntk, var1=var1, var2=var2, is_gaussian=False)

    def _pair_kernels(self, v_left, cov, v_right, ntk, spatial: int, same_example: bool = False) -> KernelPair:
        """(K', K̇·Θ) (or (K', K̇) when ``ntk`` is None) as new tensors that share no memory with the inputs, for
        a pair kernel ``cov`` (N1, N2, *pair axes) with position variances (N1, *spatial), (N2, *spatial), or the
        self-covariances (N, *pair axes) with ``same_example``: the fused pass where the activation has one
        (:meth:`fused_pairs`), else :meth:`kernels` on broadcast variances and a product."""
        fused = self.fused_pairs(v_left, cov, v_right, ntk, spatial, same_example)
        if fused is not None:
            return fused
        left, right = pair_variances(v_left, v_right, spatial)
        if same_example:
            return self.kernels(left, cov, right)
        k1, k_dot = (
            _own(t, cov, ntk, v_left, v_right) for t in self.kernels(left.unsqueeze(1), cov, right.unsqueeze(0))
        )
        return k1, k_dot if ntk is None else k_dot.mul_(ntk)

    def fused_pairs(self, v_left, cov, v_right, ntk, spatial: int, same_example: bool) -> KernelPair | None:
        """The fused form of :meth:`_pair_kernels` for this activation, or None (the default) to take the two-step
        path."""
        return None

    def make_module(self, in_shape, generator) -> nn.Module:
        return ElementwiseModule(self.function, self.name)


def _own(t: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
    """``t`` as a contiguous tensor of the pair kernel's shape that shares no memory with ``inputs`` and so may be
    written in place (a user's ``kernels`` may return one of its inputs, or a broadcast view): a transform never
    changes the Kernel it is given."""
    t = t.expand(inputs[0].shape)
    mine = t.untyped_storage().data_ptr()
    shared = any(x is not None and x.untyped_storage().data_ptr() == mine for x in inputs)
    if shared or not t.is_contiguous():
        return t.clone(memory_format=torch.contiguous_format)
    return t


class ReLU(Activation):
    """max(x, 0); arc-cosine kernels (Cho & Saul, 2009)."""

    name = "ReLU"

    def kernels(self, cov11, cov12, cov22):
        if _differentiated(cov11, cov12, cov22):  # the fused kernel has no derivative
            return relu_kernels(cov11, cov12, cov22)
        return _fused.relu_kernels(cov11, cov12, cov22) or relu_kernels(cov11, cov12, cov22)

    def fused_pairs(self, v_left, cov, v_right, ntk, spatial, same_example):
        tensors = (v_left, cov, v_right) + (() if ntk is None else (ntk,))
        if _differentiated(*tensors):  # the fused kernel has no derivative
            return None
        return _fused.relu_pairs(v_left, cov, v_right, ntk, spatial, same_example)

    def function(self, x):
        return torch.relu(x)


class LeakyReLU(Activation):
    """max(x, 0) + negative_slope·min(x, 0); arc-cosine kernels of both half-lines."""

    name = "LeakyReLU"

    def __init__(self, negative_slope: float = 0.01):
        self.negative_slope = float(negative_slope)

    def __repr__(self) -> str:
        return f"LeakyReLU({self.negative_slope})"

    def kernels(self, cov11, cov12, cov22):
        return leaky_relu_kernels(cov11, cov12, cov22, self.negative_slope)

    def function(self, x):
        return torch.nn.functional.leaky_relu(x, self.negative_slope)


class Erf(Activation):
    """erf(x); Williams' kernel."""

    name = "Erf"

    def kernels(self, cov11, cov12, cov22):
        return erf_kernels(cov11, cov12, cov22)

    def function(self, x):
        return torch.erf(x)


class GELU(Activation):
    """x·Φ(x), the exact (erf) form; closed form of Tsuchida et al. 2021."""

    name = "GELU"

    def kernels(self, cov11, cov12, cov22):
        return gelu_kernels(cov11, cov12, cov22)

    def function(self, x):
        return torch.nn.functional.gelu(x)


class Sin(Activation):
    """sin(x); closed form through E[cos w] = exp(−Var w / 2)."""

    name = "Sin"

    def kernels(self, cov11, cov12, cov22):
        return sin_kernels(cov11, cov12, cov22)

    def function(self, x):
        return torch.sin(x)


class Identity(Activation):
    """φ(x) = x: the kernels pass through unchanged."""

    name = "Identity"
    fresh = None

    def kernels(self, cov11, cov12, cov22):
        return identity_kernels(cov11, cov12, cov22)

    def function(self, x):
        return x

    def transform(self, k):
        return k

    def make_module(self, in_shape, generator):
        return nn.Identity()


class Elementwise(Activation):
    """Any elementwise function φ (a torch-differentiable callable), by Gauss-Hermite quadrature of both the
    NNGP and the derivative kernel (see :func:`quadrature_kernels`)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], degree: int = 256, name: str | None = None):
        if not callable(fn):
            raise TypeError(f"fn must be a callable on tensors; got {type(fn).__name__}")
        self.fn, self.degree = fn, degree
        self.name = name or f"Elementwise({getattr(fn, '__name__', 'fn')})"
        self._kernels = quadrature_kernels(fn, degree)

    def __repr__(self) -> str:
        return self.name

    def kernels(self, cov11, cov12, cov22):
        return self._kernels(cov11, cov12, cov22)

    def function(self, x):
        return self.fn(x)


class Tanh(Elementwise):
    """tanh(x), by Gauss-Hermite quadrature (there is no closed form)."""

    def __init__(self, degree: int = 256):
        super().__init__(torch.tanh, degree, name="Tanh")

    def __repr__(self) -> str:
        return "Tanh()"


# ---------------------------------------------------------------------------------------------------------------
# More activations (issue 13): the closed forms of neural-tangents' stax.elementwise, and SiLU/Softplus/ELU by
# quadrature. Every kernel function takes the broadcast covariances (Σ11, Σ12, Σ22) and returns the pair
# (E[φ(u)φ(v)], E[φ'(u)φ'(v)]) for a centred Gaussian pair (u, v).


def abrelu_kernels(cov11, cov12, cov22, a: float, b: float) -> KernelPair:
    r"""φ(x) = a·min(x, 0) + b·max(x, 0) (neural-tangents' ``ABRelu``; Pedamonti 2018 for the leaky case).

    With θ = arccos(Σ12/√(Σ11Σ22)) (Cho & Saul 2009, degree 1 on both half-lines):

    .. math::  E[φ(u)φ(v)] = \frac{(a-b)^2}{2π}\sqrt{Σ_{11}Σ_{22} − Σ_{12}^2}
               + \Big(\frac{a^2+b^2}{2} − \frac{(a-b)^2}{2π}θ\Big)Σ_{12},\qquad
               E[φ'(u)φ'(v)] = \frac{a^2+b^2}{2} − \frac{(a-b)^2}{2π}θ.
    """
    norm = torch.sqrt(cov11 * cov22)
    cos = (cov12 / norm).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    factor = (a - b) ** 2 / (2 * math.pi)
    k_dot = (a**2 + b**2) / 2 - factor * theta
    k = factor * norm * torch.sqrt(1 - cos**2) + k_dot * cov12
    return k, k_dot


def sign_kernels(cov11, cov12, cov22) -> KernelPair:
    r"""φ(x) = sign(x): E[sign u sign v] = 1 − 2θ/π = (2/π) arcsin ρ (Sheppard's formula), and φ' = 0 almost
    everywhere, so the NTK stops here (neural-tangents' ``Sign``)."""
    rho = (cov12 / torch.sqrt(cov11 * cov22)).clamp(-1.0, 1.0)
    k = 2 / math.pi * torch.arcsin(rho)
    return k, torch.zeros_like(k)


def exp_kernels(cov11, cov12, cov22, a: float, b: float) -> KernelPair:
    r"""φ(x) = a·exp(b x): bu + bv is Gaussian, so (neural-tangents' ``Exp``)

    .. math::  E[φ(u)φ(v)] = a^2 e^{b^2(Σ_{11} + Σ_{22} + 2Σ_{12})/2},\qquad E[φ'(u)φ'(v)] = b^2 E[φ(u)φ(v)].
    """
    k = a**2 * torch.exp(b**2 * ((cov11 + cov22) / 2 + cov12))
    return k, b**2 * k


def gaussian_kernels(cov11, cov12, cov22, a: float, b: float) -> KernelPair:
    r"""φ(x) = a·exp(b x²), b < 1/(4 max Σ) (neural-tangents' ``Gaussian``). With
    D = √((1 − 2bΣ11)(1 − 2bΣ22) − 4b²Σ12²), the Gaussian integral gives

    .. math::  E[φ(u)φ(v)] = a^2 / D,\qquad E[φ'(u)φ'(v)] = 4 a^2 b^2 Σ_{12} / D^3.
    """
    det = torch.sqrt((1 - 2 * b * cov11) * (1 - 2 * b * cov22) - 4 * b**2 * cov12**2)
    return a**2 / det, 4 * a**2 * b**2 * cov12 / det**3


def cos_kernels(cov11, cov12, cov22) -> KernelPair:
    r"""φ(x) = cos x, φ' = −sin x (see :func:`sin_kernels`):

    .. math::  E[\cos u\cos v] = e^{−(Σ_{11}+Σ_{22})/2}\cosh Σ_{12},\qquad
               E[\sin u\sin v] = e^{−(Σ_{11}+Σ_{22})/2}\sinh Σ_{12}.
    """
    sin_k, cos_k = sin_kernels(cov11, cov12, cov22)
    return cos_k, sin_k


def rbf_kernels(cov11, cov12, cov22, gamma: float) -> KernelPair:
    r"""φ(x) = √2 sin(√(2γ) x + π/4), whose NNGP is the RBF kernel (neural-tangents' ``Rbf``):

    .. math::  E[φ(u)φ(v)] = e^{−γ(Σ_{11} + Σ_{22} − 2Σ_{12})},\qquad E[φ'(u)φ'(v)] = 2γ\,E[φ(u)φ(v)].
    """
    k = torch.exp(-gamma * (cov11 + cov22 - 2 * cov12))
    return k, 2 * gamma * k


def _monomial_moment(cov11, cov12, cov22, degree: int) -> torch.Tensor:
    r"""E[u^n v^n] by Mehler's expansion: x^n = Σ_k c_{n,k} He_k(x) (probabilists' Hermite), E[He_j He_k] =
    δ_{jk} k! ρ^k for unit variances, so E[u^n v^n] = Σ_k c_{n,k}² k! (Σ11Σ22)^{(n−k)/2} Σ12^k (n − k even)."""
    if degree < 0:
        return torch.zeros_like(cov12 + 0 * (cov11 + cov22))
    coeffs = np.polynomial.hermite_e.poly2herme([0] * degree + [1])
    prod = cov11 * cov22
    total = torch.zeros_like(cov12 + 0 * prod)
    for k in range(degree % 2, degree + 1, 2):
        weight = float(coeffs[k]) ** 2 * math.factorial(k)
        total = total + weight * prod ** ((degree - k) // 2) * cov12**k
    return total


def monomial_kernels(cov11, cov12, cov22, degree: int) -> KernelPair:
    r"""φ(x) = x^n (neural-tangents' ``Monomial``, which stops at n = 5; this form has no limit):
    E[φ(u)φ(v)] = E[u^n v^n] (see ``_monomial_moment``) and E[φ'(u)φ'(v)] = n² E[u^{n−1} v^{n−1}]."""
    return _monomial_moment(cov11, cov12, cov22, degree), degree**2 * _monomial_moment(cov11, cov12, cov22, degree - 1)


def _arccos_polynomials(degree: int) -> list[np.ndarray]:
    """P_0 = 1, P_{m+1}(c) = (1 − c²)P_m'(c) + (2m + 1)c P_m(c): the m-th derivative of (1 − c²)^{−1/2} is
    P_m(c)(1 − c²)^{−1/2−m}."""
    polys = [np.array([1.0])]
    for m in range(degree):
        p = polys[-1]
        dp = np.polynomial.polynomial.polyder(p) if len(p) > 1 else np.array([0.0])
        nxt = np.polynomial.polynomial.polyadd(
            np.polynomial.polynomial.polymul([1.0, 0.0, -1.0], dp),
            (2 * m + 1) * np.polynomial.polynomial.polymul([0.0, 1.0], p),
        )
        polys.append(nxt)
    return polys


def _arccos_j(cos: torch.Tensor, degree: int) -> torch.Tensor:
    r"""Cho & Saul's J_n(θ) = (−1)^n sin^{2n+1}θ (1/sinθ ∂/∂θ)^n ((π − θ)/sinθ). With c = cos θ the operator is
    d/dc and (π − θ)' = (1 − c²)^{−1/2}, so Leibniz's rule gives

    .. math::  J_n = (π − θ) P_n(c) + \sin θ \sum_{k=1}^{n} \binom{n}{k} P_{k−1}(c) P_{n−k}(c),

    with the polynomials of :func:`_arccos_polynomials` (J_0 = π − θ, J_1 = sin θ + (π − θ) cos θ)."""
    polys = _arccos_polynomials(degree)

    def poly(p: np.ndarray) -> torch.Tensor:
        out = torch.zeros_like(cos)
        for coef in p[::-1]:
            out = out * cos + float(coef)
        return out

    theta = torch.arccos(cos)
    total = (math.pi - theta) * poly(polys[degree])
    if degree:
        tail = sum(math.comb(degree, k) * poly(polys[k - 1]) * poly(polys[degree - k]) for k in range(1, degree + 1))
        total = total + torch.sqrt(1 - cos**2) * tail
    return total


def rectified_monomial_kernels(cov11, cov12, cov22, degree: int) -> KernelPair:
    r"""φ(x) = max(x, 0)^n (with 0⁰ = 0 for x < 0: the step function at n = 0), the arc-cosine kernel of degree n
    (Cho & Saul, *Kernel Methods for Deep Learning*, NeurIPS 2009; neural-tangents' ``RectifiedMonomial``):

    .. math::  E[φ(u)φ(v)] = \frac{(Σ_{11}Σ_{22})^{n/2}}{2π} J_n(θ),\qquad
               E[φ'(u)φ'(v)] = n^2 \frac{(Σ_{11}Σ_{22})^{(n−1)/2}}{2π} J_{n−1}(θ)

    (the second by Price's theorem, ∂E[φ(u)φ(v)]/∂Σ12 = E[φ'(u)φ'(v)])."""
    prod = cov11 * cov22
    cos = (cov12 / torch.sqrt(prod)).clamp(-1.0, 1.0)
    k = prod ** (degree / 2) / (2 * math.pi) * _arccos_j(cos, degree)
    if degree == 0:
        return k, torch.zeros_like(k)
    return k, degree**2 * prod ** ((degree - 1) / 2) / (2 * math.pi) * _arccos_j(cos, degree - 1)


def hermite_kernels(cov11, cov12, cov22, degree: int) -> KernelPair:
    r"""φ(x) = He_n(x)/√(n!), the normalised probabilists' Hermite polynomial, on inputs of unit variance
    (neural-tangents' ``Hermite``; the caller checks Σ11 = Σ22 = 1). Mehler's formula E[He_n(u)He_n(v)] = n! ρ^n
    and He_n' = n He_{n−1} give

    .. math::  E[φ(u)φ(v)] = Σ_{12}^n,\qquad E[φ'(u)φ'(v)] = n Σ_{12}^{n−1}.
    """
    k = cov12**degree + 0 * (cov11 + cov22)
    if degree == 0:
        return k, torch.zeros_like(k)
    return k, degree * cov12 ** (degree - 1) + 0 * (cov11 + cov22)


def _degree(value, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"degree must be an int; got {type(value).__name__}")
    if value < low:
        raise ValueError(f"degree must be an int ≥ {low}; got {value}")
    return value


class _ClosedForm(Activation):
    """An activation given by a kernel function ``closed_form(Σ11, Σ12, Σ22, *parameters)`` and its torch
    function; ``params`` names the parameters, in the order ``closed_form`` takes them."""

    params: tuple[str, ...] = ()
    closed_form: Callable[..., KernelPair]

    def kernels(self, cov11, cov12, cov22):
        return type(self).closed_form(cov11, cov12, cov22, *(getattr(self, p) for p in self.params))

    def function(self, x):
        return type(self).elementwise(x)  # parameter-free activations set ``elementwise``; the others override

    def __repr__(self) -> str:
        return f"{self.name}(" + ", ".join(f"{p}={getattr(self, p)!r}" for p in self.params) + ")"


class Abs(_ClosedForm):
    """|x| = ABReLU(−1, 1) (neural-tangents' ``Abs``)."""

    name = "Abs"
    closed_form = staticmethod(lambda c11, c12, c22: abrelu_kernels(c11, c12, c22, -1.0, 1.0))
    elementwise = staticmethod(torch.abs)


class ABReLU(_ClosedForm):
    """a·min(x, 0) + b·max(x, 0) (neural-tangents' ``ABRelu``); see :func:`abrelu_kernels`."""

    name, params = "ABReLU", ("a", "b")
    closed_form = staticmethod(abrelu_kernels)

    def __init__(self, a: float, b: float):
        self.a, self.b = real_number("a", a), real_number("b", b)

    def function(self, x):
        return self.a * torch.clamp(x, max=0) + self.b * torch.clamp(x, min=0)


class Sign(_ClosedForm):
    """sign(x); its NTK factor is 0 (φ' = 0 almost everywhere), as in neural-tangents' ``Sign``."""

    name = "Sign"
    closed_form = staticmethod(sign_kernels)
    elementwise = staticmethod(torch.sign)


class Exp(_ClosedForm):
    """a·exp(b x) (neural-tangents' ``Exp``); see :func:`exp_kernels`."""

    name, params = "Exp", ("a", "b")
    closed_form = staticmethod(exp_kernels)

    def __init__(self, a: float = 1.0, b: float = 1.0):
        self.a, self.b = real_number("a", a), real_number("b", b)

    def function(self, x):
        return self.a * torch.exp(self.b * x)


class Gaussian(_ClosedForm):
    """a·exp(b x²) (neural-tangents' ``Gaussian``, default b = −1); see :func:`gaussian_kernels`. For b > 0 the
    expectation is finite only while 4b·Σ < 1; larger variances raise a ValueError."""

    name, params = "Gaussian", ("a", "b")

    def __init__(self, a: float = 1.0, b: float = -1.0):
        self.a, self.b = real_number("a", a), real_number("b", b)

    def kernels(self, cov11, cov12, cov22):
        if self.b > 0 and bool((4 * self.b * torch.maximum(cov11, cov22) >= 1).any()):
            largest = float(torch.maximum(cov11, cov22).max())
            raise ValueError(f"{self!r}: E[exp(2b·u²)] is infinite for input variances ≥ 1/(4b) = "
                             f"{1 / (4 * self.b):.4g}; got up to {largest:.4g}")  # fmt: skip
        return gaussian_kernels(cov11, cov12, cov22, self.a, self.b)

    def function(self, x):
        return self.a * torch.exp(self.b * x**2)


class Cos(_ClosedForm):
    """cos(x); closed form through E[cos w] = exp(−Var w / 2) (neural-tangents' ``Cos`` with a = b = 1, c = 0)."""

    name = "Cos"
    closed_form = staticmethod(cos_kernels)
    elementwise = staticmethod(torch.cos)


class Rbf(_ClosedForm):
    """√2·sin(√(2γ)x + π/4), whose NNGP is exp(−γ‖u − v‖²) (neural-tangents' ``Rbf``); see :func:`rbf_kernels`."""

    name, params = "Rbf", ("gamma",)
    closed_form = staticmethod(rbf_kernels)

    def __init__(self, gamma: float = 1.0):
        self.gamma = real_number("gamma", gamma, positive=True)

    def function(self, x):
        return math.sqrt(2) * torch.sin(math.sqrt(2 * self.gamma) * x + math.pi / 4)


class Monomial(_ClosedForm):
    """x^degree for any degree ≥ 0 (neural-tangents' ``Monomial`` stops at 5); see :func:`monomial_kernels`."""

    name, params = "Monomial", ("degree",)
    closed_form = staticmethod(monomial_kernels)

    def __init__(self, degree: int):
        self.degree = _degree(degree)

    def function(self, x):
        return x**self.degree


class RectifiedMonomial(_ClosedForm):
    """max(x, 0)^degree (the step function for degree 0), the arc-cosine kernels of Cho & Saul (2009) of any
    degree; see :func:`rectified_monomial_kernels`."""

    name, params = "RectifiedMonomial", ("degree",)
    closed_form = staticmethod(rectified_monomial_kernels)

    def __init__(self, degree: int):
        self.degree = _degree(degree)

    def function(self, x):
        return (x > 0).to(x.dtype) * torch.clamp(x, min=0) ** self.degree


class Hermite(_ClosedForm):
    """He_degree(x)/√(degree!), the normalised probabilists' Hermite polynomial (neural-tangents' ``Hermite``).

    The closed form K' = K^degree holds for inputs of unit variance only, so the kernel raises a ValueError
    unless every input variance is 1 (to 1e-10): put ``nk.LayerNorm()`` right before it.
    """

    name, params = "Hermite", ("degree",)

    def __init__(self, degree: int):
        self.degree = _degree(degree)
        self._coeffs = np.polynomial.hermite_e.herme2poly([0] * self.degree + [1]) / math.sqrt(
            math.factorial(self.degree)
        )

    def kernels(self, cov11, cov12, cov22):
        worst = float(torch.maximum((cov11 - 1).abs().max(), (cov22 - 1).abs().max()))
        if worst > 1e-10:
            raise ValueError(f"{self!r}: the closed form E[φ(u)φ(v)] = Σ12^n needs inputs of unit variance; got "
                             f"variances off 1 by up to {worst:.3g}; put nk.LayerNorm() right before it")  # fmt: skip
        return hermite_kernels(cov11, cov12, cov22, self.degree)

    def function(self, x):
        out = torch.zeros_like(x)
        for coef in self._coeffs[::-1]:
            out = out * x + float(coef)
        return out


def _silu(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.silu(x)


def _softplus(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.softplus(x)


class SiLU(Elementwise):
    """x·sigmoid(x) (a.k.a. swish), by Gauss-Hermite quadrature (no closed form is known)."""

    def __init__(self, degree: int = 256):
        super().__init__(_silu, degree, name="SiLU")

    def __repr__(self) -> str:
        return "SiLU()"


class Softplus(Elementwise):
    """log(1 + eˣ), by Gauss-Hermite quadrature (no closed form is known)."""

    def __init__(self, degree: int = 256):
        super().__init__(_softplus, degree, name="Softplus")

    def __repr__(self) -> str:
        return "Softplus()"


def polar_quadrature_kernels(fn: Callable[[torch.Tensor], torch.Tensor],
                             derivative: Callable[[torch.Tensor], torch.Tensor],
                             n_radial: int = 96, n_angular: int = 32):  # fmt: skip
    r"""E[φ(u)φ(v)] and E[φ'(u)φ'(v)] for φ smooth on each half-line (a kink or jump at 0 only, as ELU), by
    quadrature in polar coordinates, which keeps the geometric convergence that Gauss-Hermite loses at a kink.

    With z = r(cos α, sin α) ~ N(0, I₂), u = √Σ11 · r cos α and v = √Σ22 · r cos(α − β), β = arccos ρ, so u and v
    change sign only on the four rays α = ±π/2, β ± π/2. Between them φ(u)φ(v) is smooth in (r, α), and

    .. math::  E[g(u, v)] = \frac{1}{2π} \int_0^{2π}\!\int_0^{R} g\, r e^{−r^2/2}\, dr\, dα

    is a product of Gauss-Legendre rules: ``n_angular`` nodes on each of the four arcs and ``n_radial`` on
    [0, R], R = 14 (the tail beyond is below e^{−98} for φ of at most exponential growth). ``derivative`` is φ'.
    """
    radius = 14.0
    r_np, rw_np = np.polynomial.legendre.leggauss(n_radial)
    a_np, aw_np = np.polynomial.legendre.leggauss(n_angular)
    r_np, rw_np = (r_np + 1) * radius / 2, rw_np * radius / 2
    rw_np = rw_np * r_np * np.exp(-(r_np**2) / 2) / (2 * math.pi)

    def kernels(cov11, cov12, cov22) -> KernelPair:
        cov11, cov12, cov22 = torch.broadcast_tensors(cov11, cov12, cov22)
        like = dict(dtype=cov12.dtype, device=cov12.device)
        r, rw = torch.as_tensor(r_np, **like), torch.as_tensor(rw_np, **like)
        nodes, weights = torch.as_tensor(a_np, **like), torch.as_tensor(aw_np, **like)
        flat = [c.reshape(-1) for c in (cov11, cov12, cov22)]
        k, k_dot = torch.empty_like(flat[1]), torch.empty_like(flat[1])
        chunk = max(1, (1 << 21) // (4 * n_angular * n_radial))
        for start in range(0, k.numel(), chunk):
            c11, c12, c22 = (c[start : start + chunk] for c in flat)
            beta = torch.arccos((c12 / torch.sqrt(c11 * c22)).clamp(-1.0, 1.0))  # in [0, π]
            # arcs between the sign changes, sorted: −π/2, β − π/2, π/2, β + π/2, then back to 3π/2
            ends = torch.stack([-0.5 * math.pi + 0 * beta, beta - 0.5 * math.pi, 0.5 * math.pi + 0 * beta,
                                beta + 0.5 * math.pi, 1.5 * math.pi + 0 * beta], 1)  # fmt: skip
            lo, hi = ends[:, :-1, None], ends[:, 1:, None]  # (B, 4, 1)
            alpha = (lo + hi) / 2 + (hi - lo) / 2 * nodes  # (B, 4, n_angular)
            a_w = ((hi - lo) / 2 * weights).reshape(-1, 4 * n_angular, 1) * rw  # (B, 4·n_a, n_r)
            alpha = alpha.reshape(-1, 4 * n_angular, 1)
            u = torch.sqrt(c11)[:, None, None] * torch.cos(alpha) * r
            v = torch.sqrt(c22)[:, None, None] * torch.cos(alpha - beta[:, None, None]) * r
            k[start : start + chunk] = (a_w * fn(u) * fn(v)).sum((1, 2))
            k_dot[start : start + chunk] = (a_w * derivative(u) * derivative(v)).sum((1, 2))
        return k.reshape(cov12.shape), k_dot.reshape(cov12.shape)

    return kernels


class ELU(Activation):
    """x for x > 0, α(eˣ − 1) otherwise, by quadrature in polar coordinates (:func:`polar_quadrature_kernels`;
    ELU is not smooth at 0, where Gauss-Hermite converges slowly). Tsuchida et al. (AAAI 2021) give a closed
    form through bivariate normal CDFs; the quadrature reaches ~1e-14 and is simpler."""

    name = "ELU"

    def __init__(self, alpha: float = 1.0):
        self.alpha = real_number("alpha", alpha)
        self._kernels = polar_quadrature_kernels(self.function, self.derivative)

    def __repr__(self) -> str:
        return f"ELU(alpha={self.alpha})"

    def kernels(self, cov11, cov12, cov22):
        return self._kernels(cov11, cov12, cov22)

    def function(self, x):
        return torch.nn.functional.elu(x, self.alpha)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        """1 for x > 0, α eˣ otherwise."""
        return torch.where(x > 0, torch.ones_like(x), self.alpha * torch.exp(torch.clamp(x, max=0)))
