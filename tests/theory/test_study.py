"""The measurement side of ``ntkit theory learning-curve``: its ridge solver and its choice of explicit degrees."""

import math

import numpy as np
import pytest
import torch

import ntkit as nk
from ntkit.data import sphere_points
from ntkit.examples.theory_study import _krr_errors, default_max_degree
from ntkit.theory import learning_curve, sphere_spectrum


@pytest.mark.parametrize("ridge", [0.0, 1e-3])
def test_krr_errors_match_a_float64_numpy_solve(ridge):
    """Reference: numpy's LU solve of (K + δI)α = y on each nested subset. K is the ReLU NTK on S² (positive
    definite with biases; condition number < 1e7 at n = 60), so both solves agree to cond·ε ≈ 1e-9 relative."""
    arch = nk.Sequential(nk.Linear(8, b_std=0.1), nk.ReLU(), nk.Linear(1, b_std=0.1))
    x, x_test = sphere_points(60, 3, 0), sphere_points(40, 3, 1)
    y, y_test = torch.randn(60, generator=torch.Generator().manual_seed(2), dtype=torch.float64), x_test[:, 0]
    k, kt = arch.kernel(x).ntk, arch.kernel(x_test, x).ntk
    got = _krr_errors(k, kt, y, y_test, [15, 60], [ridge])
    kn, ktn, yn, ytn = k.numpy(), kt.numpy(), y.numpy(), y_test.numpy()
    assert np.linalg.cond(kn) < 1e7
    for n in (15, 60):
        alpha = np.linalg.solve(kn[:n, :n] + ridge * np.eye(n), yn[:n])
        want = float(np.mean((ktn[:, :n] @ alpha - ytn) ** 2))
        assert got[(ridge, n)] == pytest.approx(want, rel=1e-8)


def test_krr_errors_fall_back_to_least_squares_on_a_singular_kernel():
    """A rank-1 kernel K = uuᵀ (Cholesky fails at δ = 0): the minimum-norm least-squares α = u y·u/‖u‖⁴ predicts
    k(x*, X)α = (u*·u)(u·y)/‖u‖² (closed form)."""
    u = torch.tensor([1.0, 2.0, -1.0, 0.5], dtype=torch.float64)
    ut = torch.tensor([0.3, -2.0], dtype=torch.float64)
    y, y_test = torch.tensor([1.0, 0.0, 2.0, -1.0], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    got = _krr_errors(torch.outer(u, u), torch.outer(ut, u), y, y_test, [4], [0.0])
    pred = ut * float(u @ y) / float(u @ u)
    assert got[(0.0, 4)] == pytest.approx(float(((pred - y_test) ** 2).mean()), rel=1e-10)


@pytest.mark.parametrize(("dim", "n"), [(3, 1000), (3, 5000), (5, 5000), (10, 100)])
def test_default_max_degree_keeps_ten_modes_per_sample(dim, n):
    """On S² there are (L + 1)² harmonics of degree ≤ L, so L = ⌈√(10n)⌉ − 1 (but ≥ 20); in R^d the harmonics of
    degree ≤ L are the polynomials of degree L and L − 1 restricted to the sphere: C(L+d−1, d−1) + C(L+d−2, d−1)."""
    got = default_max_degree(dim, n, (1, 2, 3))

    def count(ell):
        return math.comb(ell + dim - 1, dim - 1) + (math.comb(ell + dim - 2, dim - 1) if ell else 0)

    assert got >= 20 and count(got) >= 10 * n and (got == 20 or count(got - 1) < 10 * n)
    if dim == 3:
        assert got == max(20, math.ceil(math.sqrt(10 * n)) - 1)


def test_prediction_does_not_move_with_more_explicit_degrees():
    """The modes beyond the default degree enter only through ``tail_trace``: doubling the explicit degrees moves
    the predicted test MSE by < 0.5 % at every n ≤ the n the default was chosen for (d = 3, n ≤ 2000)."""
    arch = nk.Sequential(nk.Linear(8, b_std=0.1), nk.ReLU(), nk.Linear(1, b_std=0.1))
    ns = [10, 100, 1000, 2000]
    preds = []
    for top in (default_max_degree(3, ns[-1], (1, 2, 3)), 2 * default_max_degree(3, ns[-1], (1, 2, 3))):
        spec = sphere_spectrum(arch, 3, top)
        coeffs = np.zeros(top + 1)
        coeffs[[1, 2, 3]] = np.sqrt([1.0, 0.5, 0.25])
        curve = learning_curve(spec.eigenvalues, coeffs, ns, noise=0.01, multiplicities=spec.multiplicities,
                               tail_trace=spec.tail)  # fmt: skip
        preds.append(curve.test_mse)
    np.testing.assert_allclose(preds[0], preds[1], rtol=5e-3)
