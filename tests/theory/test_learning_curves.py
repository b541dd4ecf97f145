"""Learning curves against closed forms and against kernel ridge regression simulated over many draws."""

import math

import numpy as np
import pytest
import torch

import ntkit as nk
from ntkit.data import harmonic_target, sphere_points
from ntkit.theory import learning_curve, predicted_exponent, scaling_exponent, sphere_spectrum
from ntkit.theory.learning_curves import solve_kappa


@pytest.mark.parametrize(("lam", "n", "ridge"), [(1.0, 3.0, 0.5), (0.2, 10.0, 1e-3), (5.0, 1.5, 2.0)])
def test_one_mode_kappa_solves_its_quadratic(lam, n, ridge):
    # λ/(λ+κ) + δ/κ = n  ⇔  n κ² + (nλ − λ − δ) κ − δλ = 0, whose positive root is κ
    b = n * lam - lam - ridge
    expected = (-b + math.sqrt(b * b + 4 * n * ridge * lam)) / (2 * n)
    assert solve_kappa(np.array([lam]), n, ridge) == pytest.approx(expected, rel=1e-14)


def test_kappa_solves_the_equation_on_a_power_law():
    lam = np.arange(1, 5001, dtype=float) ** -1.7
    for n, ridge, tail in [(10, 0.0, 0.0), (700, 1e-4, 0.0), (3000, 0.0, 1e-3)]:
        kappa = solve_kappa(lam, n, ridge, tail_trace=tail)
        lhs = np.sum(lam / (lam + kappa)) + (ridge + tail) / kappa
        assert lhs == pytest.approx(n, rel=1e-12)


def test_ridgeless_with_more_samples_than_modes_interpolates():
    # n ≥ M non-zero modes, δ = 0: κ = 0, every mode learned, E0 = n/(n − M): MSE = ε² n/(n − M)
    curve = learning_curve([3.0, 1.0, 0.5], [1.0, -2.0, 0.3], [5, 10], noise=0.2)
    np.testing.assert_array_equal(curve.kappa, [0.0, 0.0])
    np.testing.assert_allclose(curve.test_mse, [0.2 * 5 / 2, 0.2 * 10 / 7], rtol=1e-15)
    assert np.isinf(learning_curve([1.0, 1.0], [1.0, 1.0], 2, noise=0.1).test_mse[0])  # the interpolation peak


def test_limits_of_large_ridge_and_many_samples():
    lam, v = 1.0 / np.arange(1, 101) ** 2, 1.0 / np.arange(1, 101)
    huge = learning_curve(lam, v, 10, ridge=1e9, noise=0.3)  # κ ≈ δ/n: nothing is learned
    assert huge.test_mse[0] == pytest.approx(np.sum(v**2) + 0.3, rel=1e-6)
    many = learning_curve(lam, v, 1e9, ridge=1e-3, noise=0.3)  # κ → 0: everything learned, E0 → 1
    assert many.test_mse[0] == pytest.approx(0.3, rel=1e-6)


def test_multiplicities_equal_repeated_eigenvalues():
    lam, mult, power = np.array([1.0, 0.3, 0.05]), np.array([1, 3, 5]), np.array([0.5, 1.0, 0.2])
    grouped = learning_curve(lam, np.sqrt(power), [2, 7, 20], ridge=0.01, multiplicities=mult)
    flat_power = np.concatenate([np.full(m, p / m) for p, m in zip(power, mult, strict=True)])
    flat = learning_curve(np.repeat(lam, mult), np.sqrt(flat_power), [2, 7, 20], ridge=0.01)
    np.testing.assert_allclose(grouped.test_mse, flat.test_mse, rtol=1e-12)
    np.testing.assert_allclose(grouped.kappa, flat.kappa, rtol=1e-12)


def _krr_test_mse(arch, x, y, x_test, y_test, ridge):
    k = arch.kernel(x).ntk
    pred = arch.kernel(x_test, x).ntk @ torch.linalg.solve(k + ridge * torch.eye(len(x), dtype=k.dtype), y)
    return float(((pred - y_test) ** 2).mean())


@pytest.mark.parametrize("ridge", [0.0, 0.05])
def test_curve_matches_simulated_kernel_regression_on_the_sphere(ridge):
    """Simulation: ReLU-NTK regression of a degree-1 + degree-2 + degree-3 harmonic target with noise on S⁵,
    averaged over 20 draws of the training set.

    Tolerance: 4 standard errors of the mean over draws, plus 10 % for the theory's own finite-n error (it is
    exact only as n → ∞; the issue's accuracy target). The test set (1,000 points) is shared by all draws.
    """
    dim, degrees, powers, noise = 6, [1, 2, 3], [1.0, 0.5, 0.25], 0.05
    arch = nk.Sequential(nk.Linear(8, b_std=0.1), nk.ReLU(), nk.Linear(1, b_std=0.1))
    spec = sphere_spectrum(arch, dim, 30, quadrature=1024)
    coeffs = np.zeros(31)
    coeffs[degrees] = np.sqrt(powers)
    f = harmonic_target(dim, degrees, powers, seed=3)
    x_test = sphere_points(1000, dim, 10_000)
    y_test = f(x_test)
    g = torch.Generator().manual_seed(0)
    for n in (20, 80):
        curve = learning_curve(spec.eigenvalues, coeffs, n, ridge=ridge, noise=noise,
                               multiplicities=spec.multiplicities, tail_trace=spec.tail)  # fmt: skip
        errors = []
        for _ in range(20):
            x = sphere_points(n, dim, g)
            y = f(x) + math.sqrt(noise) * torch.randn(n, generator=g, dtype=torch.float64)
            errors.append(_krr_test_mse(arch, x, y, x_test, y_test, ridge) + noise)  # + ε²: noisy test labels
        errors = np.array(errors)
        stderr = errors.std(ddof=1) / math.sqrt(len(errors))
        assert abs(errors.mean() - curve.test_mse[0]) <= 4 * stderr + 0.1 * curve.test_mse[0]


def test_scaling_exponent_of_an_exact_power_law():
    n = np.array([10, 30, 100, 300, 1000.0])
    alpha, c = scaling_exponent(n, 7.0 * n**-1.3)
    assert alpha == pytest.approx(1.3, rel=1e-12) and c == pytest.approx(7.0, rel=1e-12)


def test_power_law_spectrum_gives_the_predicted_exponent():
    # λ_k = k^{-2}, v_k² = k^{-2.5}: α = min(c − 1, 2b) = min(1.5, 4) = 1.5 (Bordelon et al. 2020 §5)
    k = np.arange(1, 200_001, dtype=float)
    lam, v = k**-2.0, k**-1.25
    assert predicted_exponent(lam, v, 10, 100_000) == pytest.approx(1.5, rel=1e-9)
    n = np.geomspace(100, 3000, 8)
    alpha, _ = scaling_exponent(n, learning_curve(lam, v, n).test_mse)
    # the asymptotic law: finite-n corrections are O(n^{-(c−1)/b}) relative, a few percent over this range
    assert alpha == pytest.approx(1.5, abs=0.05)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"eigenvalues": [1.0, -0.1]}, ValueError, "non-negative"),
        ({"n": [10, 0]}, ValueError, "n must hold sample sizes > 0"),
        ({"n": -5}, ValueError, "n must hold sample sizes > 0"),
        ({"target_coeffs": [1.0, 2.0, 3.0]}, ValueError, "one coefficient per eigenvalue"),
        ({"target_coeffs": [1.0, float("nan")]}, ValueError, "NaN"),
        ({"ridge": -1.0}, ValueError, "ridge"),
        ({"noise": -0.1}, ValueError, "noise"),
        ({"noise": "0.1"}, TypeError, "noise"),
        ({"eigenvalues": object()}, TypeError, "eigenvalues"),
        ({"multiplicities": [1, 0]}, ValueError, "multiplicities"),
    ],
)
def test_bad_input_is_named(kwargs, error, match):
    args = {"eigenvalues": [1.0, 0.5], "target_coeffs": [1.0, 0.5], "n": [10]} | kwargs
    with pytest.raises(error, match=match):
        learning_curve(**args)


def test_scaling_exponent_needs_two_points():
    with pytest.raises(ValueError, match="at least two"):
        scaling_exponent([10, 20], [0.1, 0.0])
    with pytest.raises(ValueError, match="same length"):
        scaling_exponent([10, 20, 30], [0.1, 0.05])
