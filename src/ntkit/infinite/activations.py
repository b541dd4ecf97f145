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

from ntkit.infinite.kernel import Kernel, pair_variances, spatial_diagonal
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
    every step is exact, as in the plain formulas.
    """
    if _differentiated(cov11, cov12, cov22):
        return _relu_kernels_differentiable(cov11, cov12, cov22)
    norm = torch.mul(cov11, cov22).sqrt_()
    cos = torch.div(cov12, norm).clamp_(-1.0, 1.0)
    pi_minus_theta = torch.arccos(cos).neg_().add_(math.pi)
    bracket = torch.addcmul(norm.new_ones(()), cos, cos, value=-1.0).sqrt_().addcmul_(cos, pi_minus_theta)
    k1 = norm.div_(2 * math.pi).mul_(bracket)
    k0 = pi_minus_theta.div_(2 * math.pi)
    return k1, k0


def _differentiated(*tensors: torch.Tensor) -> bool:
    """True when autograd records these tensors (reverse mode) or they carry forward-mode tangents."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return True
    return any(fwAD.unpack_dual(t).tangent is not None for t in tensors)


def _relu_kernels_differentiable(cov11, cov12, cov22) -> KernelPair:
    """:func:`relu_kernels` without in-place steps, for autograd (kernel hyperparameters that require grad).

    arccos has an infinite slope at cos θ = ±1 although both kernels are smooth there in the covariances
    (K₁ = √(Σ11Σ22)/2 and K₀ = 1/2 at cos θ = 1, both 0 at cos θ = −1), so those entries take their exact
    limits and the formula sees a harmless cos θ = 0 in their place: no NaN gradient on the diagonal.
    """
    norm = torch.sqrt(cov11 * cov22)
    cos = (cov12 / norm).clamp(-1.0, 1.0)
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
    cos = (cov12 / norm).clamp(-1.0, 1.0)
    theta, sin = torch.arccos(cos), torch.sqrt(1 - cos**2)
    j1 = norm / (2 * math.pi) * (sin + (math.pi - theta) * cos)
    j1_flipped = norm / (2 * math.pi) * (sin - theta * cos)
    k = (1 + a**2) * j1 - 2 * a * j1_flipped
    k_dot = ((1 + a**2) * (math.pi - theta) + 2 * a * theta) / (2 * math.pi)
    return k, k_dot


def erf_kernels(cov11, cov12, cov22) -> KernelPair:
    r"""Williams, *Computing with infinite networks*, NeurIPS 1997:

    .. math::  E[\mathrm{erf}(u)\mathrm{erf}(v)] = \frac{2}{π}\arcsin\frac{2Σ_{12}}{\sqrt{(1+2Σ_{11})(1+2Σ_{22})}}

    .. math::  E[\mathrm{erf}'(u)\mathrm{erf}'(v)] = \frac{4}{π}\big((1+2Σ_{11})(1+2Σ_{22}) − 4Σ_{12}^2\big)^{-1/2}.
    """
    prod = (1 + 2 * cov11) * (1 + 2 * cov22)
    k = 2 / math.pi * torch.arcsin((2 * cov12 / torch.sqrt(prod)).clamp(-1.0, 1.0))
    k_dot = 4 / math.pi / torch.sqrt(prod - 4 * cov12**2)
    return k, k_dot


def gelu_kernels(cov11, cov12, cov22) -> KernelPair:
    r"""Exact GELU, φ(x) = x Φ(x) (Tsuchida, Pearce, van der Heide, Roosta & Gallagher, *Avoiding kernel fixed
    points: computing with ELU and GELU infinite networks*, AAAI 2021; the same closed form as neural-tangents).
    With P = Σ11Σ22, P₁ = (1+Σ11)(1+Σ22), Δ = √(P₁ − Σ12²) and ψ = atan2(Σ12, Δ):

    .. math::  K' = \frac{Σ_{12}}{4} + \frac{1}{2π}\Big(\frac{Σ_{12}^2 + PΔ^2}{P_1 Δ} + Σ_{12} ψ\Big),\qquad
               \dot K = \frac14 + \frac{ψ}{2π} + \frac{Σ_{12}}{2πΔ}\Big(\frac{1}{Δ^2} + \frac{1 − P}{P_1} + 1\Big).
    """
    prod, prod1 = cov11 * cov22, (1 + cov11) * (1 + cov22)
    delta_sq = prod1 - cov12**2
    delta = torch.sqrt(delta_sq)
    psi = torch.atan2(cov12, delta)
    k = cov12 / 4 + ((cov12**2 + prod * delta_sq) / (prod1 * delta) + cov12 * psi) / (2 * math.pi)
    k_dot = 0.25 + psi / (2 * math.pi) + cov12 / (2 * math.pi * delta) * (1 / delta_sq + (1 - prod) / prod1 + 1)
    return k, k_dot


def sin_kernels(cov11, cov12, cov22) -> KernelPair:
    r"""sin u sin v = ½[cos(u − v) − cos(u + v)] and E[cos w] = e^{−Var(w)/2} give

    .. math::  E[\sin u \sin v] = e^{−(Σ_{11}+Σ_{22})/2}\sinh Σ_{12},\qquad
               E[\cos u \cos v] = e^{−(Σ_{11}+Σ_{22})/2}\cosh Σ_{12}.
    """
    damping = torch.exp(-(cov11 + cov22) / 2)
    return damping * torch.sinh(cov12), damping * torch.cosh(cov12)


def identity_kernels(cov11, cov12, cov22) -> KernelPair:
    """φ(x) = x: K' = Σ12, K̇ = 1."""
    return cov12 + 0 * (cov11 + cov22), torch.ones_like(cov12 + 0 * (cov11 + cov22))


def quadrature_kernels(fn: Callable[[torch.Tensor], torch.Tensor], degree: int = 256):
    r"""E[φ(u)φ(v)] and E[φ'(u)φ'(v)] by 2-D Gauss-Hermite quadrature, for any elementwise φ.

    Writing u = √Σ11·z₁ and v = √Σ22·(ρ z₁ + √(1−ρ²) z₂) with z ~ N(0, I₂) and ρ = Σ12/√(Σ11Σ22),
    E[g(u, v)] ≈ Σ_{ij} w_i w_j g(u(z_i), v(z_i, z_j)) over the ``degree`` nodes of the probabilists' rule.
    φ' comes from autograd. The error falls geometrically with the degree at a rate set by how far φ's complex
    singularities are from the real axis relative to the variance: for tanh with unit variances it is ~1e-7 at
    64 nodes, ~1e-11 at 128 and ~1e-14 at 256 (the default). Entries are processed in chunks to bound memory.
    """
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 2:
        raise ValueError(f"degree must be an int ≥ 2; got {degree!r}")
    nodes_np, weights_np = np.polynomial.hermite_e.hermegauss(degree)
    weights_np = weights_np / weights_np.sum()
    chunk = max(1, (1 << 22) // degree**2)

    def derivative(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(fn(x).sum(), x)
        return grad

    def kernels(cov11, cov12, cov22) -> KernelPair:
        cov11, cov12, cov22 = torch.broadcast_tensors(cov11, cov12, cov22)
        z = torch.as_tensor(nodes_np, dtype=cov12.dtype, device=cov12.device)
        w = torch.as_tensor(weights_np, dtype=cov12.dtype, device=cov12.device)
        ww = w.view(1, -1, 1) * w.view(1, 1, -1)
        flat = [c.reshape(-1, 1, 1) for c in (cov11, cov12, cov22)]
        k, k_dot = torch.empty_like(flat[1].view(-1)), torch.empty_like(flat[1].view(-1))
        for start in range(0, k.numel(), chunk):
            c11, c12, c22 = (c[start : start + chunk] for c in flat)
            rho = (c12 / torch.sqrt(c11 * c22)).clamp(-1.0, 1.0)
            u = torch.sqrt(c11) * z.view(1, -1, 1)
            v = torch.sqrt(c22) * (rho * z.view(1, -1, 1) + torch.sqrt(1 - rho**2) * z.view(1, 1, -1))
            k[start : start + chunk] = (ww * fn(u) * fn(v)).sum((1, 2))
            k_dot[start : start + chunk] = (ww * derivative(u) * derivative(v)).sum((1, 2))
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
        s = k.spatial_dims
        v1 = spatial_diagonal(k.var1, s)
        v2 = v1 if k.var2 is None else spatial_diagonal(k.var2, s)
        left, right = pair_variances(v1, v2, s)
        nngp, k_dot = self.kernels(left.unsqueeze(1), k.nngp, right.unsqueeze(0))
        var1 = self.kernels(*_self_pair(v1, k.var1, s))[0]
        var2 = None if k.var2 is None else self.kernels(*_self_pair(v2, k.var2, s))[0]
        if _is_fresh(k_dot, k):
            ntk = k_dot.mul_(k.ntk)  # reuse k_dot's memory
        else:
            ntk = k.ntk * k_dot
        return k.replace(nngp=nngp, ntk=ntk, var1=var1, var2=var2, is_gaussian=False)

    def make_module(self, in_shape, generator) -> nn.Module:
        return ElementwiseModule(self.function, self.name)


def _is_fresh(t: torch.Tensor, k: Kernel) -> bool:
    """True when ``t`` is a contiguous tensor of the NTK's shape and dtype that shares no memory with ``k``, so
    that it may be overwritten (a user's ``kernels`` could return one of its inputs)."""
    if t.shape != k.ntk.shape or t.dtype != k.ntk.dtype or not t.is_contiguous():
        return False
    mine = t.untyped_storage().data_ptr()
    return all(x is None or x.untyped_storage().data_ptr() != mine for x in (k.nngp, k.ntk, k.var1, k.var2))


def _self_pair(v: torch.Tensor, cov: torch.Tensor, spatial: int):
    left, right = pair_variances(v, v, spatial)
    return left, cov, right


class ReLU(Activation):
    """max(x, 0); arc-cosine kernels (Cho & Saul, 2009)."""

    name = "ReLU"

    def kernels(self, cov11, cov12, cov22):
        return relu_kernels(cov11, cov12, cov22)

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
