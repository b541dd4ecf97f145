"""The page's seed example against plain numpy: the NTK of f(x) = v·relu(w x + b)/√m written out by hand.

For f(x) = v·relu(w x + b)/√m the gradients are ∂f/∂v_i = relu(w_i x + b_i)/√m, ∂f/∂w_i = v_i·1[w_i x + b_i > 0]·x/√m
and ∂f/∂b_i = v_i·1[w_i x + b_i > 0]/√m, so

    Θ(x, x') = (1/m) Σ_i [relu(z_i) relu(z_i') + v_i² 1[z_i > 0] 1[z_i' > 0] (x x' + 1_bias)],

with z_i = w_i x + b_i. Kernel ridge regression, f̂ = Θ(x, X)(Θ(X, X) + λI)⁻¹y, is then one numpy solve.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntkit.demo.seed_example import seed_example, seed_example_report

M, RIDGE = 128, 1e-3


def _numpy_ntk(w, v, b, x1, x2):
    z1 = np.outer(x1, w) + (0 if b is None else b)
    z2 = np.outer(x2, w) + (0 if b is None else b)
    d1, d2 = (z1 > 0) * v, (z2 > 0) * v
    inputs = np.outer(x1, x2) + (0 if b is None else 1)
    return (np.maximum(z1, 0) @ np.maximum(z2, 0).T + (d1 @ d2.T) * inputs) / len(w)


def _numpy_mse(w, v, b=None) -> float:
    x_train, x_test = np.linspace(-1, 1, 40), np.linspace(-1, 1, 200)
    k = _numpy_ntk(w, v, b, x_train, x_train)
    alpha = np.linalg.solve(k + RIDGE * np.eye(40), np.sin(3 * x_train))
    return float(np.mean((_numpy_ntk(w, v, b, x_test, x_train) @ alpha - np.sin(3 * x_test)) ** 2))


def _torch_draws(bias: bool):
    """The same N(0, 1) numbers as the example: w, then v, then b, from torch's generator seeded with 0."""
    g = torch.Generator().manual_seed(0)
    draws = [torch.randn(M, generator=g, dtype=torch.float64).numpy() for _ in range(3 if bias else 2)]
    return draws if bias else [*draws, None]


def _tolerance(w, v, b) -> float:
    """Relative error of two float64 routes to the same ridge solve: N·κ·eps, κ = (λ_max + λ)/λ."""
    x = np.linspace(-1, 1, 40)
    kappa = (np.linalg.eigvalsh(_numpy_ntk(w, v, b, x, x)).max() + RIDGE) / RIDGE
    return 40 * kappa * np.finfo(np.float64).eps


@pytest.mark.parametrize("bias", [False, True])
def test_ntkit_gives_the_numpy_number(bias):
    draws = _torch_draws(bias)
    rel = _tolerance(*draws)
    assert rel < 1e-6  # the comparison is sharp: six digits or better
    assert seed_example(bias=bias) == pytest.approx(_numpy_mse(*draws), rel=rel)


def test_plain_numpy_gives_0_169_without_bias_and_far_less_with_it():
    # Without a bias Θ(x, x') = x x' Θ(sign x, sign x'): the fit is one line per side of 0, whatever the draw. So
    # numpy's own generator gives the same three digits as torch's.
    rng = np.random.default_rng(0)
    w, v, b = rng.standard_normal(M), rng.standard_normal(M), rng.standard_normal(M)
    assert round(_numpy_mse(w, v), 3) == 0.169
    assert round(_numpy_mse(*_torch_draws(False)), 3) == 0.169
    assert _numpy_mse(w, v, b) < _numpy_mse(w, v) / 100  # orders of magnitude with a bias
    report = seed_example_report()
    assert round(report["mse_no_bias"], 3) == 0.169 and report["ratio"] > 100
    assert "class TwoLayerReLU" in report["source"] and "ntkit.empirical_ntk(net, x_train)" in report["source"]


def test_the_server_sends_the_example(live_server):
    import httpx

    body = httpx.get(f"{live_server.url}/api/seed-example").json()
    for key, bias in (("mse_no_bias", False), ("mse_bias", True)):
        draws = _torch_draws(bias)
        assert body[key] == pytest.approx(_numpy_mse(*draws), rel=_tolerance(*draws))
