"""lazy(model, α): the Chizat–Bach rescaling, checked against its definition."""

import math

import pytest
import torch

import ntkit as nk
from ntkit import regimes

X = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_forward_is_alpha_times_the_change_and_the_kernel_scales_by_alpha_squared():
    model = regimes.mlp(2, 32, 1, seed=3, dtype=torch.float64)
    f0 = model(X).detach()
    k0 = nk.empirical_ntk(model, X)
    wrapped = regimes.lazy(model, 7.0)
    assert wrapped.loss_scale == pytest.approx(1 / 49)
    assert float(wrapped(X).detach().abs().max()) == 0.0
    torch.testing.assert_close(nk.empirical_ntk(wrapped, X), 49.0 * k0, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        model[0].bias.add_(0.1)  # move the wrapped model; the frozen copy stays at θ0
    torch.testing.assert_close(wrapped(X).detach(), 7.0 * (model(X).detach() - f0))


def test_training_speed_in_function_space_does_not_depend_on_alpha():
    """One SGD step on loss/α² changes α(f − f0) by −η Θ ∇L to first order, whatever α."""
    y = torch.sin(X[:, :1])
    steps = {}
    for alpha in (1.0, 100.0):
        model = regimes.lazy(regimes.mlp(2, 64, 1, seed=1, dtype=torch.float64), alpha)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        loss = 0.5 * ((model(X) - y) ** 2).mean() * model.loss_scale
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps[alpha] = model(X).detach()
    k = nk.empirical_ntk(regimes.mlp(2, 64, 1, seed=1, dtype=torch.float64), X)
    linear = -0.05 * k @ (-y) / len(y)  # F starts at 0, so the residual is −y
    torch.testing.assert_close(steps[100.0], linear, rtol=1e-3, atol=1e-6)  # second-order term ∝ 1/α
    assert float((steps[1.0] - linear).norm()) > 10 * float((steps[100.0] - linear).norm())


@pytest.mark.parametrize("alpha", [0, -1.0, float("inf"), math.nan, True])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        regimes.lazy(torch.nn.Linear(2, 1), alpha)
