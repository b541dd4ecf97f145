"""``predict.gradient_descent_mse_ensemble`` against Monte Carlo over finite networks and closed forms by hand.

Monte Carlo: S networks ``arch.build(seed=s)`` (width 512, one output, float64). Each one's linearization is
trained exactly in function space with its *own* empirical kernel and its own initial outputs f0 — gradient flow
of a linearized net on the MSE is the linear ODE that ``predict.gradient_descent_mse`` solves (checked against
SGD on ``nk.linearize`` in test_gradient_descent_mse.py). Two trainings per net:

* ``get="ntk"``: every layer trains, the dynamics kernel is the full empirical NTK;
* ``get="nngp"``: only the readout trains, the dynamics kernel is J_r J_rᵀ with J_r the Jacobian of the
  outputs with respect to the readout weights (by ``torch.func.jacrev`` here), whose mean is the NNGP.

The sample mean over seeds is compared with the ensemble's mean within 4 standard errors. The sample covariance
is compared within 4.5 standard errors sqrt((C_ii C_jj + C_ij²)/S) on a run with y = 0: with y ≠ 0 the finite-width
fluctuation of the empirical kernel adds Var(Θ̂_{*X} Θ̂⁻¹ y) = O(|y|²/width) to the spread of the trained outputs,
a genuine finite-width effect the infinite-width formula leaves out; with y = 0 the outputs are
g0 − Θ̂_{*X}Θ̂⁻¹(I − e^{−rtΘ̂}) f0 and the gap is O(1/width) relative. A control checks that the same criterion
rejects the prediction at the wrong time or with the other kernel, so the Monte Carlo has the resolution to see
an error.
"""

import pytest
import torch
from torch.func import functional_call, jacrev

import ntkit as nk
from ntkit import predict

DT = torch.float64
N, M, D = 6, 3, 3
WIDTH = 512
SEEDS = 300
T = 5.0
INF = float("inf")
TIMES = (T, INF)


def _arch(width=WIDTH):
    return nk.Sequential(nk.Linear(width, W_std=1.5, b_std=0.1), nk.Erf(), nk.Linear(1))


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, dtype=DT, generator=g)
    xt = torch.randn(M, D, dtype=DT, generator=g)
    y = torch.randn(N, 1, dtype=DT, generator=g)
    return x, xt, y


def _readout_kernel(net, xa):
    """J_r J_rᵀ over the parameters of the last layer only (the hidden layers frozen)."""
    readout = net[-1]
    with torch.no_grad():
        feats = net[:-1](xa)
    params = {k: v.detach() for k, v in readout.named_parameters()}
    jac = jacrev(lambda p: functional_call(readout, p, (feats,)))(params)
    flat = torch.cat([j.reshape(xa.shape[0], -1) for j in jac.values()], dim=1)
    return flat @ flat.T


@pytest.fixture(scope="module")
def monte_carlo():
    """{(get, t): (trained test outputs with y (S, M), trained outputs on all N + M points with y = 0 (S, N+M))}."""
    x, xt, y = _data()
    xa = torch.cat([x, xt])
    arch = _arch()
    runs = {(get, t): ([], []) for get in ("ntk", "nngp") for t in TIMES}
    for seed in range(SEEDS):
        net = arch.build((D,), seed=seed, dtype=DT)
        with torch.no_grad():
            f = net(xa)
        kernels = {"ntk": nk.empirical_ntk(net, xa, output="mean"), "nngp": _readout_kernel(net, xa)}
        for get, k in kernels.items():
            kxx, ksx = k[:N, :N], k[N:, :N]
            _, test = predict.gradient_descent_mse(kxx, y)(list(TIMES), f[:N], f[N:], ksx)
            train0, test0 = predict.gradient_descent_mse(kxx, torch.zeros_like(y))(list(TIMES), f[:N], f[N:], ksx)
            for i, t in enumerate(TIMES):
                runs[get, t][0].append(test[i, :, 0])
                runs[get, t][1].append(torch.cat([train0[i, :, 0], test0[i, :, 0]]))
    return {key: (torch.stack(a), torch.stack(b)) for key, (a, b) in runs.items()}


def _mean_z(samples, predicted):
    se = samples.std(0) / samples.shape[0] ** 0.5
    return (samples.mean(0) - predicted) / se


def _cov_z(samples, predicted):
    c = torch.cov(samples.T)
    var = c.diagonal()
    se = torch.sqrt((var[:, None] * var[None, :] + c**2) / samples.shape[0])
    return (c - predicted) / se


@pytest.mark.parametrize("t", TIMES, ids=["t=5", "t=inf"])
@pytest.mark.parametrize("get", ["ntk", "nngp"])
def test_mean_matches_monte_carlo_over_trained_linearized_networks(monte_carlo, get, t):
    x, xt, y = _data()
    ens = predict.gradient_descent_mse_ensemble(_arch(), x, y)
    pred = ens(None if t == INF else t, xt, get=get)
    assert pred.mean.shape == (M, 1) and pred.covariance is None
    samples = monte_carlo[get, t][0]
    z = _mean_z(samples, pred.mean[:, 0])
    assert float(z.abs().max()) < 4.0, z
    # control: the same criterion rejects the other kernel's prediction and (finite t) the prediction at 2t
    other = ens(None if t == INF else t, xt, get="nngp" if get == "ntk" else "ntk").mean[:, 0]
    assert float(_mean_z(samples, other).abs().max()) > 8.0
    if t != INF:
        assert float(_mean_z(samples, ens(2 * t, xt, get=get).mean[:, 0]).abs().max()) > 8.0


@pytest.mark.parametrize("t", TIMES, ids=["t=5", "t=inf"])
@pytest.mark.parametrize("get", ["ntk", "nngp"])
def test_covariance_matches_monte_carlo_over_trained_linearized_networks(monte_carlo, get, t):
    x, xt, _ = _data()
    xa = torch.cat([x, xt])
    zero = torch.zeros(N, 1, dtype=DT)
    pred = predict.gradient_descent_mse_ensemble(_arch(), x, zero)(
        None if t == INF else t, xa, get=get, compute_cov=True
    )
    assert pred.covariance.shape == (N + M, N + M)
    samples = monte_carlo[get, t][1]
    z_mean = _mean_z(samples, pred.mean[:, 0]) if t != INF else _mean_z(samples[:, N:], pred.mean[N:, 0])
    assert float(z_mean.abs().max()) < 4.0, z_mean
    if t == INF:  # every net interpolates y = 0 exactly; the ensemble has zero variance at the train points
        assert float(samples[:, :N].abs().max()) < 1e-8
        torch.testing.assert_close(pred.covariance[:N], torch.zeros(N, N + M, dtype=DT), rtol=0, atol=1e-8)
        z = _cov_z(samples[:, N:], pred.covariance[N:, N:])
    else:
        z = _cov_z(samples, pred.covariance)
    assert float(z.abs().max()) < 4.5, z
    # control: the covariance at a time 3× later is rejected (finite t), or the prior covariance (t = ∞)
    later = predict.gradient_descent_mse_ensemble(_arch(), x, zero)(3 * T, xa, get=get, compute_cov=True)
    wrong = later.covariance if t != INF else _arch().kernel(xa).nngp
    zw = _cov_z(samples, wrong) if t != INF else _cov_z(samples[:, N:], wrong[N:, N:])
    assert float(zw.abs().max()) > 8.0


# --------------------------------------------------------------------------------------------------------------
# Closed forms by hand, from the infinite-width kernels
# --------------------------------------------------------------------------------------------------------------


def _kernels(x, xt):
    arch = _arch()
    kxx, ksx, kss = arch.kernel(x), arch.kernel(xt, x), arch.kernel(xt)
    return arch, kxx, ksx, kss


@pytest.mark.parametrize("get", ["ntk", "nngp"])
def test_infinite_time_mean_is_the_kernel_regression_by_hand(get):
    x, xt, y = _data()
    arch, kxx, ksx, _ = _kernels(x, xt)
    d, dsx = getattr(kxx, get), getattr(ksx, get)
    pred = predict.gradient_descent_mse_ensemble(arch, x, y)(None, xt, get=get)
    torch.testing.assert_close(pred.mean, dsx @ torch.linalg.solve(d, y), rtol=1e-9, atol=1e-10)
    if get == "nngp":  # the NNGP posterior mean K_{*X} K⁻¹ y
        torch.testing.assert_close(pred.mean, ksx.nngp @ torch.linalg.solve(kxx.nngp, y), rtol=1e-9, atol=1e-10)
    # on the training points the ensemble interpolates
    train = predict.gradient_descent_mse_ensemble(arch, x, y)(None, None, get=get, compute_cov=True)
    torch.testing.assert_close(train.mean, y, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(train.covariance, torch.zeros(N, N, dtype=DT), rtol=0, atol=1e-8)


@pytest.mark.parametrize("t", [0.0, 2.0, 30.0, None], ids=["t=0", "t=2", "t=30", "t=inf"])
@pytest.mark.parametrize("get", ["ntk", "nngp"])
def test_mean_and_covariance_equal_the_formulas_by_hand(get, t):
    """A(t) = D_{*X} D⁻¹ (I − e^{−ηtD/(NO)}); mean = A y; cov = K_** − A K_X* − K_*X Aᵀ + A K_XX Aᵀ (two outputs)."""
    x, xt, _ = _data()
    y = torch.randn(N, 2, dtype=DT, generator=torch.Generator().manual_seed(5))
    arch, kxx, ksx, kss = _kernels(x, xt)
    d, dsx = getattr(kxx, get), getattr(ksx, get)
    lr = 0.7
    decay = torch.zeros(N, N, dtype=DT) if t is None else torch.linalg.matrix_exp(-lr * t / y.numel() * d)
    a = dsx @ torch.linalg.solve(d, torch.eye(N, dtype=DT) - decay)
    cov = kss.nngp - a @ ksx.nngp.T - ksx.nngp @ a.T + a @ kxx.nngp @ a.T
    pred = predict.gradient_descent_mse_ensemble(arch, x, y, learning_rate=lr)(t, xt, get=get, compute_cov=True)
    torch.testing.assert_close(pred.mean, a @ y, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(pred.covariance, cov, rtol=1e-8, atol=1e-10)
    if t == 0.0:  # untrained: the prior
        torch.testing.assert_close(pred.covariance, kss.nngp, rtol=1e-10, atol=1e-12)


def test_diag_reg_is_ridge_on_the_dynamics_kernel():
    x, xt, y = _data()
    arch, kxx, ksx, _ = _kernels(x, xt)
    reg = kxx.ntk + 0.1 * kxx.ntk.diagonal().mean() * torch.eye(N, dtype=DT)
    pred = predict.gradient_descent_mse_ensemble(arch, x, y, diag_reg=0.1)(None, xt)
    torch.testing.assert_close(pred.mean, ksx.ntk @ torch.linalg.solve(reg, y), rtol=1e-9, atol=1e-10)


def test_no_x_test_predicts_on_the_training_points():
    x, _, y = _data()
    ens = predict.gradient_descent_mse_ensemble(_arch(), x, y)
    for t in (1.5, None):
        a = ens(t, None, compute_cov=True)
        b = ens(t, x, compute_cov=True)
        torch.testing.assert_close(a.mean, b.mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(a.covariance, b.covariance, rtol=1e-10, atol=1e-12)


def test_vector_of_times_is_a_leading_axis():
    x, xt, y = _data()
    ens = predict.gradient_descent_mse_ensemble(_arch(), x, y)
    times = [0.0, 4.0, 1.0, INF]
    g = ens(times, xt, compute_cov=True)
    assert g.mean.shape == (4, M, 1) and g.covariance.shape == (4, M, M)
    for i, t in enumerate(times):
        one = ens(None if t == INF else t, xt, compute_cov=True)
        torch.testing.assert_close(g.mean[i], one.mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g.covariance[i], one.covariance, rtol=1e-12, atol=1e-12)


def test_errors():
    x, xt, y = _data()
    ens = predict.gradient_descent_mse_ensemble(_arch(), x, y)
    with pytest.raises(ValueError, match="get must be"):
        ens(1.0, xt, get="both")
    with pytest.raises(ValueError, match="t must be"):
        ens(-1.0, xt)
    with pytest.raises(ValueError, match="learning_rate"):
        predict.gradient_descent_mse_ensemble(_arch(), x, y, learning_rate=0.0)
    with pytest.raises(ValueError, match="y_train"):
        predict.gradient_descent_mse_ensemble(_arch(), x, y[:-1])
    with pytest.raises(TypeError, match="architecture"):
        predict.gradient_descent_mse_ensemble(torch.nn.Linear(3, 1), x, y)
    signals = torch.randn(N, 2, 5, dtype=DT, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="reduction"):
        predict.gradient_descent_mse_ensemble(nk.Sequential(nk.Conv1d(4, 3), nk.ReLU(), nk.Conv1d(1, 3)), signals, y)
