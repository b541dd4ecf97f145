"""Every closed-form Gaussian expectation in ``ntkit.infinite.activations`` against an independent reference.

For a centred Gaussian pair (u, v) with covariance [[c11, c12], [c12, c22]] each function returns
(E[φ(u)φ(v)], E[φ'(u)φ'(v)]). The references are

* Monte Carlo: 2²¹ float64 draws (z → Cholesky factor), with φ' written out by hand in this file; the check is
  |closed − MC| < 5 standard errors of the sample mean, on covariances that are uncorrelated, strongly
  correlated (ρ = ±0.999), anti-correlated and of unequal variances;
* Gauss-Hermite quadrature (``quadrature_kernels``) of the same smooth φ, which must agree with the closed
  forms of erf, sin and GELU to 1e-10 relative to the Cauchy-Schwarz scale √(E[φ(u)²] E[φ(v)²]).
"""

import math
from functools import lru_cache

import pytest
import torch

from ntkit.infinite.activations import (
    erf_kernels,
    gelu_kernels,
    leaky_relu_kernels,
    quadrature_kernels,
    relu_kernels,
    sin_kernels,
)

N_SAMPLES = 1 << 21
DT = torch.float64


# (c11, c12, c22): ρ = 0, ρ = 0.999, ρ = −0.999, ρ = 0.999 with unequal variances, anti-correlated with unequal
# variances, weakly correlated with very unequal variances, and large variances.
COVARIANCES = [
    (1.0, 0.0, 1.0),
    (1.0, 0.999, 1.0),
    (1.0, -0.999, 1.0),
    (2.0, 0.999 * math.sqrt(2.0 * 0.5), 0.5),
    (1.5, -0.9, 0.8),
    (0.3, 0.1, 3.0),
    (4.0, 2.5, 2.25),
]


def _normal_cdf(x):
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def _normal_pdf(x):
    return torch.exp(-(x**2) / 2) / math.sqrt(2 * math.pi)


def _leaky(slope):
    return (
        lambda x: torch.where(x > 0, x, slope * x),
        lambda x: torch.where(x > 0, torch.ones_like(x), torch.full_like(x, slope)),
    )


# name → (closed form (c11, c12, c22) → (K, K̇), φ, φ' by hand)
ACTIVATIONS = {
    "relu": (relu_kernels, torch.relu, lambda x: (x > 0).to(x.dtype)),
    "leaky_relu_0.1": (lambda a, b, c: leaky_relu_kernels(a, b, c, 0.1), *_leaky(0.1)),
    "leaky_relu_-0.5": (lambda a, b, c: leaky_relu_kernels(a, b, c, -0.5), *_leaky(-0.5)),
    "erf": (erf_kernels, torch.erf, lambda x: 2 / math.sqrt(math.pi) * torch.exp(-(x**2))),
    "gelu": (gelu_kernels, lambda x: x * _normal_cdf(x), lambda x: _normal_cdf(x) + x * _normal_pdf(x)),
    "sin": (sin_kernels, torch.sin, torch.cos),
    "quadrature_tanh": (quadrature_kernels(torch.tanh), torch.tanh, lambda x: 1 - torch.tanh(x) ** 2),
}


@lru_cache(maxsize=1)  # the tests run covariance by covariance
def _samples(cov11: float, cov12: float, cov22: float) -> tuple[torch.Tensor, torch.Tensor]:
    """N_SAMPLES draws of (u, v), one fixed stream per covariance."""
    g = torch.Generator().manual_seed(1234)
    chol = torch.linalg.cholesky(torch.tensor([[cov11, cov12], [cov12, cov22]], dtype=DT))
    z = torch.randn(N_SAMPLES, 2, generator=g, dtype=DT) @ chol.T
    return z[:, 0], z[:, 1]


def _mean_and_se(samples: torch.Tensor) -> tuple[float, float]:
    return float(samples.mean()), float(samples.std() / math.sqrt(samples.numel()))


def _t(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=DT)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("cov", COVARIANCES, ids=lambda c: "c=" + ",".join(f"{v:g}" for v in c))
def test_closed_form_matches_monte_carlo(name, cov):
    closed, phi, phi_dot = ACTIVATIONS[name]
    k, k_dot = closed(*map(_t, cov))
    u, v = _samples(*cov)
    mc_k, se_k = _mean_and_se(phi(u) * phi(v))
    mc_k_dot, se_k_dot = _mean_and_se(phi_dot(u) * phi_dot(v))
    assert abs(float(k) - mc_k) < 5 * se_k, (float(k), mc_k, se_k)
    assert abs(float(k_dot) - mc_k_dot) < 5 * se_k_dot, (float(k_dot), mc_k_dot, se_k_dot)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_hand_written_derivative_matches_autograd(name):
    """The φ' used by the Monte Carlo reference is the derivative of φ (away from ReLU's kink)."""
    _, phi, phi_dot = ACTIVATIONS[name]
    x = torch.linspace(-3.05, 3.05, 40, dtype=DT, requires_grad=True)  # even count: avoids x = 0
    (grad,) = torch.autograd.grad(phi(x).sum(), x)
    torch.testing.assert_close(phi_dot(x.detach()), grad, rtol=1e-13, atol=1e-14)


def test_activation_functions_match_torch():
    """The φ written here is the one the layer specs use (GELU: the exact, erf-based form)."""
    x = torch.linspace(-4, 4, 33, dtype=DT)
    torch.testing.assert_close(ACTIVATIONS["gelu"][1](x), torch.nn.functional.gelu(x), rtol=1e-14, atol=1e-15)
    leaky = torch.nn.functional.leaky_relu(x, -0.5)
    torch.testing.assert_close(ACTIVATIONS["leaky_relu_-0.5"][1](x), leaky, rtol=0, atol=0)


SMOOTH = {
    "erf": (erf_kernels, torch.erf),
    "sin": (sin_kernels, torch.sin),
    "gelu": (gelu_kernels, torch.nn.functional.gelu),
}


@pytest.mark.parametrize("name", list(SMOOTH))
def test_quadrature_agrees_with_closed_form(name):
    """Two independent routes to the same integral: 256-node Gauss-Hermite vs the closed form, batched."""
    closed, phi = SMOOTH[name]
    c11, c12, c22 = (torch.tensor(col, dtype=DT) for col in zip(*COVARIANCES, strict=True))
    k, k_dot = closed(c11, c12, c22)
    q, q_dot = quadrature_kernels(phi)(c11, c12, c22)
    # Cauchy-Schwarz: |E[φ(u)φ(v)]| ≤ √(E[φ(u)²] E[φ(v)²]); the diagonal closed forms give that scale.
    scale = torch.sqrt(closed(c11, c11, c11)[0] * closed(c22, c22, c22)[0])
    scale_dot = torch.sqrt(closed(c11, c11, c11)[1] * closed(c22, c22, c22)[1])
    assert float(((q - k).abs() / scale).max()) < 1e-10
    assert float(((q_dot - k_dot).abs() / scale_dot).max()) < 1e-10


def test_closed_forms_broadcast_and_keep_dtype():
    """(N1, 1) × (N1, N2) × (1, N2) broadcasting, as the Activation layers call them; float32 in, float32 out."""
    c11 = torch.tensor([[1.0], [2.0]])
    c22 = torch.tensor([[0.5, 1.5, 3.0]])
    c12 = 0.3 * torch.sqrt(c11 * c22)
    for fn in (relu_kernels, erf_kernels, gelu_kernels, sin_kernels, quadrature_kernels(torch.tanh, 32)):
        k, k_dot = fn(c11, c12, c22)
        assert k.shape == k_dot.shape == (2, 3)
        assert k.dtype == k_dot.dtype == torch.float32
        for i in range(2):
            for j in range(3):
                ref = fn(c11[i, 0:1], c12[i, j : j + 1], c22[0, j : j + 1])
                torch.testing.assert_close(k[i, j], ref[0][0])
                torch.testing.assert_close(k_dot[i, j], ref[1][0])


def test_relu_kernels_exact_on_the_diagonal():
    """u = v: E[relu(u)²] = Σ/2 and P(u > 0) = 1/2 exactly, even where rounding pushes the cosine past 1."""
    cov = torch.tensor([0.3, 1.0, 7.0], dtype=torch.float64)
    k1, k0 = relu_kernels(cov, cov * (1 + 1e-16), cov)
    torch.testing.assert_close(k1, cov / 2, rtol=1e-15, atol=0)
    torch.testing.assert_close(k0, torch.full_like(cov, 0.5), rtol=1e-15, atol=0)
