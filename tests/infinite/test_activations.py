"""The arc-cosine closed forms against Monte Carlo integration of the same Gaussian expectation."""

import math

import pytest
import torch

from ntkit.infinite import relu_kernels

N_SAMPLES = 4_000_000


def _monte_carlo(cov11: float, cov12: float, cov22: float, seed: int = 0):
    """E[relu(u)relu(v)] and E[1(u>0)1(v>0)] from samples, with their standard errors."""
    g = torch.Generator().manual_seed(seed)
    cov = torch.tensor([[cov11, cov12], [cov12, cov22]], dtype=torch.float64)
    z = torch.randn(N_SAMPLES, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    k1_samples = torch.relu(z[:, 0]) * torch.relu(z[:, 1])
    k0_samples = ((z[:, 0] > 0) & (z[:, 1] > 0)).double()
    se = lambda s: float(s.std() / math.sqrt(N_SAMPLES))  # noqa: E731
    return float(k1_samples.mean()), se(k1_samples), float(k0_samples.mean()), se(k0_samples)


@pytest.mark.parametrize(
    "cov11, cov12, cov22",
    [(1.0, 0.0, 1.0), (1.0, 0.7, 1.0), (2.0, -1.2, 1.5), (0.5, 0.49, 0.6), (1.0, -0.999, 1.0)],
)
def test_relu_kernels_match_monte_carlo(cov11, cov12, cov22):
    k1, k0 = relu_kernels(*(torch.tensor(v, dtype=torch.float64) for v in (cov11, cov12, cov22)))
    mc_k1, se_k1, mc_k0, se_k0 = _monte_carlo(cov11, cov12, cov22)
    assert abs(float(k1) - mc_k1) < 5 * se_k1
    assert abs(float(k0) - mc_k0) < 5 * se_k0


def test_relu_kernels_exact_on_the_diagonal():
    # u = v: E[relu(u)^2] = Σ/2 and P(u > 0) = 1/2, exactly, even where rounding pushes the cosine past 1.
    cov = torch.tensor([0.3, 1.0, 7.0], dtype=torch.float64)
    k1, k0 = relu_kernels(cov, cov * (1 + 1e-16), cov)
    torch.testing.assert_close(k1, cov / 2, rtol=1e-15, atol=0)
    torch.testing.assert_close(k0, torch.full_like(cov, 0.5), rtol=1e-15, atol=0)
