"""ntkit.sklearn against an independent NumPy implementation of the ReLU MLP's kernels and direct float64 solves.

The reference (``_relu_mlp``) writes the arc-cosine recursion of Cho & Saul 2009 / Jacot et al. 2018 from
scratch in NumPy; ntkit's kernels must match it to KERNEL_RTOL. That tolerance is set by the self-pairs: ntkit
computes ⟨x, x⟩ once as a matrix product and once as a sum, which round differently, so cos θ = 1 − O(ε) on the
diagonal and arccos (slope −1/√(1 − c²)) turns that into θ ≈ √(2·2ε) ≈ 3e-8, i.e. a relative error
θ/π ≈ 1e-8 in K̇ = (π − θ)/2π at each ReLU: KERNEL_RTOL = 1e-7 covers two ReLU layers with margin.

The estimators are then checked against direct float64 solves (numpy.linalg.solve, scipy's expm) on the kernel
matrices that ntkit gives: condition numbers ≲ 1e3 here (diag_reg ≥ 1e-4 relative to the mean diagonal, a few
dozen points), so relative agreement of 1e-8 leaves a margin of ~100 over the rounding bound κ·ε ≈ 1e-12 × 100.
"""

import math
import pickle

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.exceptions import NotFittedError
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import WhiteKernel
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import check_estimator

import ntkit as nk
from ntkit.sklearn import InfiniteWidthKernel, NNGPRegressor, NTKClassifier, NTKRegressor, default_mlp

RTOL = 1e-8
KERNEL_RTOL = 1e-7


def _relu_mlp(x1, x2, depth=2, w=1.0, b=0.1, fixed=0):
    """NNGP and NTK of Linear → (ReLU → Linear)×depth in the NTK parameterization, from scratch.

    With x1 is x2 the diagonal is set to the self-covariances k11 at every layer: cos θ = 1 there exactly, and
    arccos, whose slope is infinite at 1, would turn a rounding of 1e-16 in cos θ into 1e-8 in θ.
    """
    same = x1 is x2
    d = x1.shape[1]
    k12 = w**2 * x1 @ x2.T / d + b**2
    k11 = w**2 * (x1**2).sum(1) / d + b**2
    k22 = w**2 * (x2**2).sum(1) / d + b**2
    theta = k12.copy() if fixed < 1 else np.zeros_like(k12)
    for layer in range(2, depth + 2):
        if same:
            np.fill_diagonal(k12, k11)
        norm = np.sqrt(np.outer(k11, k22))
        angle = np.arccos(np.clip(k12 / norm, -1, 1))
        relu = norm / (2 * math.pi) * (np.sin(angle) + (math.pi - angle) * np.cos(angle))
        relu_dot = (math.pi - angle) / (2 * math.pi)
        k12 = w**2 * relu + b**2
        theta = k12 + w**2 * relu_dot * theta
        if layer <= fixed:
            theta = np.zeros_like(theta)
        k11, k22 = w**2 * k11 / 2 + b**2, w**2 * k22 / 2 + b**2
    return k12, theta


def _kernels(x1, x2, depth=2, w=1.0, b=0.1, fixed=0):
    """ntkit's NNGP and NTK of the estimators' MLP (NumPy), after checking them against the reference."""
    k = default_mlp(depth, w, b, fixed).kernel(torch.tensor(x1), None if x2 is x1 else torch.tensor(x2))
    nngp, ntk = k.nngp.numpy(), k.ntk.numpy()
    ref_nngp, ref_ntk = _relu_mlp(x1, x2, depth, w, b, fixed)
    np.testing.assert_allclose(nngp, ref_nngp, rtol=0, atol=1e-12 * np.abs(ref_nngp).max())
    np.testing.assert_allclose(ntk, ref_ntk, rtol=0, atol=KERNEL_RTOL * np.abs(ref_ntk).max())
    return nngp, ntk


def _data(n=30, m=7, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(m, d)), rng.normal(size=(n, 2))


def _ridge(k, diag_reg):
    return k + diag_reg * np.mean(np.diag(k)) * np.eye(len(k))


# --- scikit-learn's own conventions -------------------------------------------------------------------------------

#: Every check of sklearn 1.9 passes; check_array_api_input is skipped by sklearn itself unless SCIPY_ARRAY_API=1
#: (the estimators compute in torch float64 on NumPy input and declare no array-API support).
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@pytest.mark.parametrize("estimator", [NTKRegressor(), NTKClassifier(), NNGPRegressor()], ids=type)
def test_check_estimator(estimator):
    results = check_estimator(estimator, expected_failed_checks=EXPECTED_FAILED_CHECKS, on_skip=None)
    assert sum(r["status"] == "passed" for r in results) >= 50


# --- values ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_regressor_at_infinite_time_is_kernel_ridge(kernel):
    x, x_test, y = _data()
    nngp, ntk = _kernels(x, x, w=1.3, b=0.2)
    nngp_t, ntk_t = _kernels(x_test, x, w=1.3, b=0.2)
    k, k_t = (ntk, ntk_t) if kernel == "ntk" else (nngp, nngp_t)
    expected = k_t @ np.linalg.solve(_ridge(k, 1e-3), y)
    got = NTKRegressor(kernel=kernel, diag_reg=1e-3, W_std=1.3, b_std=0.2).fit(x, y).predict(x_test)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=RTOL * np.abs(expected).max())


def test_regressor_at_finite_time_follows_the_matrix_exponential():
    """f(t) = Θ_*X Θ⁻¹ (I − exp(−ηtΘ/N)) y, with scipy's expm as the reference."""
    x, x_test, y = _data()
    _, ntk = _kernels(x, x)
    _, ntk_t = _kernels(x_test, x)
    theta = _ridge(ntk, 1e-4)
    t, lr = 50.0, 2.0
    expected = ntk_t @ np.linalg.solve(theta, (np.eye(len(x)) - scipy.linalg.expm(-lr * t * theta / y.size)) @ y)
    got = NTKRegressor(t=t, learning_rate=lr).fit(x, y).predict(x_test)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=RTOL * np.abs(expected).max())


def test_fixed_layers_drop_their_contributions_to_the_ntk():
    x, x_test, y = _data()
    for fixed in (1, 2):
        _, ntk = _kernels(x, x, fixed=fixed)
        _, ntk_t = _kernels(x_test, x, fixed=fixed)
        expected = ntk_t @ np.linalg.solve(_ridge(ntk, 1e-4), y)
        got = NTKRegressor(fixed_layers=fixed).fit(x, y).predict(x_test)
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=RTOL * np.abs(expected).max())
    # every hidden layer fixed: only the readout trains, whose NTK is the NNGP
    only_readout = NTKRegressor(fixed_layers=2).fit(x, y).predict(x_test)
    np.testing.assert_allclose(only_readout, NTKRegressor(kernel="nngp").fit(x, y).predict(x_test), rtol=1e-10)


def test_fixed_layers_finite_network_detaches_the_fixed_layers():
    model = default_mlp(2, fixed_layers=1).build((3,), seed=0)
    model(torch.randn(4, 3)).sum().backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert grads["0.weight"] is None and grads["0.bias"] is None
    assert grads["3.weight"] is not None and grads["5.weight"] is not None


def test_classifier_regresses_one_hot_targets():
    x, x_test, _ = _data()
    labels = np.array(["a", "b", "c"])[np.arange(len(x)) % 3]
    _, ntk = _kernels(x, x)
    _, ntk_t = _kernels(x_test, x)
    onehot = (labels[:, None] == np.array(["a", "b", "c"])).astype(float)
    expected = ntk_t @ np.linalg.solve(_ridge(ntk, 1e-4), onehot)
    clf = NTKClassifier().fit(x, labels)
    np.testing.assert_allclose(clf.decision_function(x_test), expected, rtol=RTOL, atol=RTOL)
    np.testing.assert_array_equal(clf.predict(x_test), np.array(["a", "b", "c"])[expected.argmax(1)])
    binary = NTKClassifier().fit(x, labels == "b")
    decision = binary.decision_function(x_test)
    assert decision.shape == (len(x_test),)
    np.testing.assert_array_equal(binary.predict(x_test), decision > 0)


def test_nngp_regressor_posterior():
    x, x_test, y = _data()
    nngp, _ = _kernels(x, x)
    nngp_t, _ = _kernels(x_test, x)
    nngp_tt, _ = _kernels(x_test, x_test)
    reg = _ridge(nngp, 1e-4)
    mean = nngp_t @ np.linalg.solve(reg, y[:, 0])
    cov = nngp_tt - nngp_t @ np.linalg.solve(reg, nngp_t.T)
    gp = NNGPRegressor().fit(x, y[:, 0])
    got_mean, got_cov = gp.predict(x_test, return_cov=True)
    np.testing.assert_allclose(got_mean, mean, rtol=RTOL, atol=RTOL * np.abs(mean).max())
    np.testing.assert_allclose(got_cov, cov, atol=RTOL * np.abs(nngp_tt).max())
    _, std = gp.predict(x_test, return_std=True)
    np.testing.assert_allclose(std, np.sqrt(np.diag(cov)), atol=1e-6 * math.sqrt(np.abs(nngp_tt).max()))
    multi_mean, multi_std = NNGPRegressor().fit(x, y).predict(x_test, return_std=True)
    assert multi_mean.shape == multi_std.shape == (len(x_test), 2)


def test_an_explicit_arch_is_used_as_given():
    x, x_test, y = _data()
    layers = [nk.Linear(8, W_std=1.3, b_std=0.2), nk.ReLU()] * 3 + [nk.Linear(1, W_std=1.3, b_std=0.2)]
    arch = nk.Sequential(*layers)
    _, ntk = _kernels(x, x, depth=3, w=1.3, b=0.2)
    _, ntk_t = _kernels(x_test, x, depth=3, w=1.3, b=0.2)
    expected = ntk_t @ np.linalg.solve(_ridge(ntk, 1e-4), y)
    got = NTKRegressor(arch=arch, depth=1, W_std=9.0).fit(x, y).predict(x_test)  # depth, W_std unused
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=RTOL * np.abs(expected).max())


def test_pickle_round_trip_predicts_the_same():
    x, x_test, y = _data()
    for est in (NTKRegressor(), NNGPRegressor()):
        fitted = est.fit(x, y)
        again = pickle.loads(pickle.dumps(fitted))
        np.testing.assert_array_equal(again.predict(x_test), fitted.predict(x_test))


# --- composition ---------------------------------------------------------------------------------------------------


def test_grid_search_in_a_pipeline_searches_the_hyperparameters():
    x, y = load_iris(return_X_y=True)
    grid = {"ntkclassifier__depth": [1, 3], "ntkclassifier__kernel": ["ntk", "nngp"],
            "ntkclassifier__diag_reg": [1e-4, 1e-1], "ntkclassifier__b_std": [0.0, 0.5]}  # fmt: skip
    search = GridSearchCV(make_pipeline(StandardScaler(), NTKClassifier()), grid, cv=KFold(3, shuffle=True,
                          random_state=0)).fit(x, y)  # fmt: skip
    assert len(search.cv_results_["params"]) == 16
    assert search.best_score_ > 0.85  # iris: every one of these kernels classifies it well (chance is 1/3)
    assert search.best_estimator_[-1].classes_.tolist() == [0, 1, 2]


# --- the Gaussian-process kernel -----------------------------------------------------------------------------------


def test_gp_kernel_values_and_log_space_gradient():
    x, x_test, _ = _data(n=12)
    kernel = InfiniteWidthKernel(W_std=1.3, b_std=0.2)
    k, grad = kernel(x, eval_gradient=True)
    np.testing.assert_allclose(k, _relu_mlp(x, x, w=1.3, b=0.2)[0], rtol=1e-12)
    np.testing.assert_allclose(kernel(x_test, x), _relu_mlp(x_test, x, w=1.3, b=0.2)[0], rtol=1e-12)
    np.testing.assert_allclose(kernel.diag(x_test), np.diag(_relu_mlp(x_test, x_test, w=1.3, b=0.2)[0]), rtol=1e-12)
    assert grad.shape == (12, 12, 2)
    # central differences of the reference in log θ: truncation h²·|k'''| ≈ 1e-8, rounding ε|k|/h ≈ 1e-12
    h = 1e-4
    for i, (w, b) in enumerate([(1.3 * math.exp(h), 0.2), (1.3, 0.2 * math.exp(h))]):
        w_minus, b_minus = (1.3 * math.exp(-h), 0.2) if i == 0 else (1.3, 0.2 * math.exp(-h))
        fd = (_relu_mlp(x, x, w=w, b=b)[0] - _relu_mlp(x, x, w=w_minus, b=b_minus)[0]) / (2 * h)
        np.testing.assert_allclose(grad[..., i], fd, atol=1e-6 * np.abs(fd).max())
    ntk_kernel = InfiniteWidthKernel(get="ntk", W_std=1.3, b_std=0.2)
    np.testing.assert_allclose(ntk_kernel(x), _relu_mlp(x, x, w=1.3, b=0.2)[1], rtol=KERNEL_RTOL)
    np.testing.assert_allclose(ntk_kernel.diag(x), np.diag(_relu_mlp(x, x, w=1.3, b=0.2)[1]), rtol=KERNEL_RTOL)
    fixed_bias = InfiniteWidthKernel(b_std=0.0)
    assert fixed_bias.theta.shape == (1,) and fixed_bias(x, eval_gradient=True)[1].shape == (12, 12, 1)


def test_gaussian_process_fits_the_hyperparameters_by_marginal_likelihood():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 2))
    y = np.sin(2 * x[:, 0]) + 0.05 * rng.normal(size=30)
    start = InfiniteWidthKernel(W_std=0.5, b_std=0.05) + WhiteKernel(0.1)
    gp = GaussianProcessRegressor(start, optimizer="fmin_l_bfgs_b").fit(x, y)
    assert gp.log_marginal_likelihood_value_ > gp.log_marginal_likelihood(start.theta) + 1.0
    # at the optimum the gradient of the log marginal likelihood vanishes (L-BFGS-B's projected gradient tolerance)
    _, grad = gp.log_marginal_likelihood(gp.kernel_.theta, eval_gradient=True)
    free = (gp.kernel_.theta > gp.kernel_.bounds[:, 0] + 1e-3) & (gp.kernel_.theta < gp.kernel_.bounds[:, 1] - 1e-3)
    assert np.all(np.abs(grad[free]) < 1e-2 * max(1.0, abs(gp.log_marginal_likelihood_value_)))


def test_svc_with_the_callable_kernel_equals_the_precomputed_gram():
    x, y = load_iris(return_X_y=True)
    kernel = InfiniteWidthKernel(get="ntk")
    callable_svc = SVC(kernel=kernel, C=2.0).fit(x[::2], y[::2])
    precomputed = SVC(kernel="precomputed", C=2.0).fit(kernel(x[::2]), y[::2])
    np.testing.assert_array_equal(callable_svc.predict(x[1::2]), precomputed.predict(kernel(x[1::2], x[::2])))
    assert clone(kernel).get_params()["get"] == "ntk"


# --- bad input -------------------------------------------------------------------------------------------------------


def test_nan_in_X_is_refused_at_fit_and_predict():
    x, x_test, y = _data()
    bad = x.copy()
    bad[3, 1] = np.nan
    for est in (NTKRegressor(), NTKClassifier(), NNGPRegressor()):
        target = y[:, 0] > 0 if isinstance(est, NTKClassifier) else y[:, 0]
        with pytest.raises(ValueError, match="Input X contains NaN"):
            est.fit(bad, target)
        est.fit(x, target)
        with pytest.raises(ValueError, match="Input X contains NaN"):
            est.predict(bad)
    with pytest.raises(ValueError, match="X contains NaN"):
        InfiniteWidthKernel()(bad)


def test_predict_before_fit_is_refused():
    for est in (NTKRegressor(), NTKClassifier(), NNGPRegressor()):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            est.predict(np.zeros((2, 3)))


def test_a_different_feature_count_at_predict_is_refused():
    x, _, y = _data()
    with pytest.raises(ValueError, match="X has 4 features, but NTKRegressor is expecting 3 features"):
        NTKRegressor().fit(x, y).predict(np.zeros((2, 4)))


def test_a_classifier_refuses_continuous_targets():
    x, _, y = _data()
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        NTKClassifier().fit(x, y[:, 0])


def test_bad_hyperparameters_are_refused_at_fit():
    x, _, y = _data()
    with pytest.raises(ValueError, match="'kernel' parameter of NTKRegressor must be a str among"):
        NTKRegressor(kernel="rbf").fit(x, y)
    with pytest.raises(ValueError, match="'arch' parameter of NTKRegressor must be an instance of"):
        NTKRegressor(arch="mlp").fit(x, y)
    with pytest.raises(ValueError, match=r"fixed_layers must be in \[0, depth=2\]"):
        NTKRegressor(fixed_layers=3).fit(x, y)
    with pytest.raises(ValueError, match="return_std and return_cov cannot both be True"):
        NNGPRegressor().fit(x, y).predict(x, return_std=True, return_cov=True)
