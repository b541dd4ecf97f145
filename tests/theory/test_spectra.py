"""Spectra against independent references: closed-form expansions, counting, and Monte Carlo (Nyström)."""

import math

import numpy as np
import pytest
import torch
from scipy.special import iv

import ntkit as nk
from ntkit.data import sphere_points
from ntkit.data.sphere import harmonic_multiplicity
from ntkit.theory import angular_spectrum, spectrum, sphere_spectrum

EPS = np.finfo(np.float64).eps
RELU_NTK = nk.Sequential(nk.Linear(8, b_std=0.1), nk.ReLU(), nk.Linear(1, b_std=0.1))


@pytest.mark.parametrize("dim", [2, 3, 5, 10])
def test_exponential_kernel_matches_bessel_closed_form(dim):
    # e^{zt} = Γ(ν)(z/2)^{−ν} Σ_ℓ (ℓ+ν) I_{ℓ+ν}(z) C_ℓ^ν(t), ν = (d−2)/2, so on the uniform sphere
    # λ_ℓ = Γ(d/2)(2/z)^ν I_{ℓ+ν}(z) (Watson, Bessel functions, §11.5; d = 3: √(π/2) I_{ℓ+1/2}(1)).
    order = 1024
    s = angular_spectrum(np.exp, dim, 12, quadrature=order)
    nu = (dim - 2) / 2
    expected = math.gamma(dim / 2) * 2**nu * iv(np.arange(13) + nu, 1.0)
    # the rule is exact for a polynomial of this degree; what is left is rounding in a sum of `order` terms,
    # each at most e·weight, over weights that sum to 1 after normalisation
    np.testing.assert_allclose(s.eigenvalues, expected, rtol=0, atol=order * EPS * math.e)
    assert s.trace == pytest.approx(math.e, rel=1e-15)


@pytest.mark.parametrize("dim", [3, 4, 7])
def test_square_kernel_has_two_eigenvalues(dim):
    # t² = 1/d + (d−1)/d·P_2(t), P_2 = (d t² − 1)/(d − 1), N(d, 2) = (d + 2)(d − 1)/2: λ_0 = 1/d, λ_2 = 2/(d(d+2))
    s = angular_spectrum(np.square, dim, 6, quadrature=16)
    expected = np.zeros(7)
    expected[0], expected[2] = 1 / dim, 2 / (dim * (dim + 2))
    np.testing.assert_allclose(s.eigenvalues, expected, rtol=0, atol=64 * EPS)
    assert abs(s.tail) <= s.multiplicities.sum() * 64 * EPS  # Σ N(d, ℓ)·(each λ_ℓ's rounding)


@pytest.mark.parametrize("dim", [2, 3, 4, 6, 10])
def test_multiplicities_count_harmonic_polynomials(dim):
    # harmonic polynomials of degree ℓ in d variables: homogeneous ones of degree ℓ minus those of degree ℓ − 2
    for degree in range(8):
        homogeneous = math.comb(degree + dim - 1, dim - 1)
        lower = math.comb(degree + dim - 3, dim - 1) if degree >= 2 else 0
        assert harmonic_multiplicity(dim, degree) == homogeneous - lower


def test_sphere_spectrum_sums_to_the_trace_and_refines_with_quadrature():
    coarse = sphere_spectrum(RELU_NTK, 3, 40, quadrature=1024)
    fine = sphere_spectrum(RELU_NTK, 3, 40, quadrature=4096)
    # k(1) = Σ_ℓ N λ_ℓ: the tail above ℓ = 40 holds O(1/ℓ) of the trace for a λ_ℓ ~ ℓ^{-3} kernel
    x = torch.zeros(1, 3, dtype=torch.float64)
    x[0, 0] = 1.0
    assert fine.trace == pytest.approx(RELU_NTK.kernel(x).ntk.item(), rel=1e-15)
    assert 0 < fine.tail < 0.05 * fine.trace
    assert np.all(fine.eigenvalues > 0)
    # the ReLU kernels' (1 − t)^{1/2} corner limits convergence to a power of the nodes; both rules agree far
    # below the smallest eigenvalue kept
    np.testing.assert_allclose(coarse.eigenvalues, fine.eigenvalues, rtol=0, atol=1e-3 * fine.eigenvalues.min())


def test_nystrom_eigenvalues_converge_to_the_sphere_spectrum():
    """Monte Carlo: K/n on uniform samples of S² against the exact per-degree eigenvalues of the ReLU NTK.

    By the addition theorem Σ_m Y_ℓm(x)² = N(d, ℓ), so the first-order fluctuation of a whole degree's eigenvalue
    sum vanishes; its bias and its spread over draws are both O(1/n). We require the mean over draws within five
    single-draw standard deviations of the exact value, and the spread itself to be small.
    """
    exact = sphere_spectrum(RELU_NTK, 3, 2)
    groups = [(0, 1), (1, 4), (4, 9)]  # degrees 0, 1, 2 are the nine largest eigenvalues (λ_3 < λ_2 / 10)
    draws = []
    for seed in range(4):
        ev = spectrum(RELU_NTK, sphere_points(500, 3, seed), n_eig=9).eigenvalues.numpy()
        draws.append([ev[a:b].sum() for a, b in groups])
    draws = np.array(draws)
    expected = exact.eigenvalues * exact.multiplicities
    spread = draws.std(0, ddof=1)
    assert np.all(np.abs(draws.mean(0) - expected) <= 5 * spread)
    assert np.all(spread < 0.02 * expected)


def test_nystrom_eigenfunctions_extend_and_give_coefficients():
    x = sphere_points(300, 3, 1)
    s = spectrum(RELU_NTK, x, n_eig=4)
    # on the sample, the extension reproduces the eigenvectors (K u = n λ u)
    np.testing.assert_allclose(s.eigenfunctions(x).numpy(), s.eigenvectors.numpy(), atol=1e-9)
    gram = s.eigenvectors.T @ s.eigenvectors / x.shape[0]
    np.testing.assert_allclose(gram.numpy(), np.eye(4), atol=1e-12)
    # a target that is eigenfunction 2 has coefficient e_2
    np.testing.assert_allclose(s.coefficients(s.eigenvectors[:, 2]).numpy(), np.eye(4)[2], atol=1e-12)


@pytest.mark.parametrize(
    ("arch", "why"),
    [
        (nk.Sequential(nk.Conv1d(4, 3), nk.ReLU(), nk.Flatten(), nk.Linear(1)), "positions"),
        (nk.Sequential(nk.Linear(4), nk.LayerNorm(), nk.Linear(1)), "centres each input"),
        (nk.Sequential(nk.Linear(4), nk.Parallel(nk.Linear(2), nk.AvgPool1d(2))), "positions"),
    ],
)
def test_sphere_spectrum_refuses_kernels_that_are_not_dot_products(arch, why):
    with pytest.raises(ValueError, match=f"dot-product kernel.*{why}"):
        sphere_spectrum(arch, 3, 4)


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match="arch"):
        sphere_spectrum("relu", 3, 4)
    with pytest.raises(ValueError, match="dim"):
        sphere_spectrum(RELU_NTK, 1, 4)
    with pytest.raises(ValueError, match="max_degree"):
        sphere_spectrum(RELU_NTK, 3, -1)
    with pytest.raises(ValueError, match="radius"):
        sphere_spectrum(RELU_NTK, 3, 4, radius=0.0)
    with pytest.raises(ValueError, match="get"):
        sphere_spectrum(RELU_NTK, 3, 4, get="cov")
    with pytest.raises(TypeError, match="x must be a floating-point"):
        spectrum(RELU_NTK, torch.ones(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="n_eig"):
        spectrum(RELU_NTK, torch.ones(4, 3, dtype=torch.float64), n_eig=0)
    s = spectrum(RELU_NTK, sphere_points(5, 3), n_eig=2)
    with pytest.raises(ValueError, match="y must be"):
        s.coefficients(torch.ones(4))


def test_zero_eigenvalues_of_a_bias_free_relu_kernel_are_not_negative():
    # the ReLU NNGP without biases has λ_ℓ = 0 for odd ℓ ≥ 3 (Bietti & Mairal 2019); quadrature gives ±1e−14 there
    s = sphere_spectrum(nk.Sequential(nk.Linear(1), nk.ReLU(), nk.Linear(1)), 3, 9, get="nngp", quadrature=1024)
    assert np.all(s.eigenvalues >= 0)
    np.testing.assert_allclose(s.eigenvalues[[3, 5, 7, 9]], 0.0, atol=1024 * EPS * s.trace)
    assert np.all(s.eigenvalues[[0, 1, 2, 4, 6, 8]] > 1e3 * 1024 * EPS * s.trace)
