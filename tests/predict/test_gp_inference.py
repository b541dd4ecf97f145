"""``predict.gp_inference`` against the GP posterior written out by hand with ``torch.linalg.solve``.

mean = K_{*X} (K + σ²I)⁻¹ y,  cov = K_{**} − K_{*X} (K + σ²I)⁻¹ K_{X*}  (Rasmussen & Williams 2006, eqs.
2.23–2.24), σ² = diag_reg·mean(diag K), or diag_reg itself with ``diag_reg_absolute_scale=True``. Besides random
PSD matrices, one case uses an NNGP kernel from an architecture and checks the posterior against conditioning
the joint Gaussian over (train, test) by hand (Schur complement of the joint covariance).
"""

import pytest
import torch

import ntkit as nk
from ntkit import predict

DT = torch.float64
N, M = 7, 4


def _joint(seed, p=N + M):
    a = torch.randn(p, p, dtype=DT, generator=torch.Generator().manual_seed(seed))
    return a @ a.T / p + 0.05 * torch.eye(p, dtype=DT)


def _split(joint):
    return joint[:N, :N], joint[N:, :N], joint[N:, N:]


@pytest.mark.parametrize("absolute", [False, True])
@pytest.mark.parametrize("diag_reg", [0.0, 1e-3, 0.3])
@pytest.mark.parametrize("o", [1, 3])
def test_posterior_equals_the_formulas_by_hand(o, diag_reg, absolute):
    k, ksx, kss = _split(_joint(1))
    y = torch.randn(N, o, dtype=DT, generator=torch.Generator().manual_seed(2))
    sigma2 = diag_reg * (1.0 if absolute else float(k.diagonal().mean()))
    kr = k + sigma2 * torch.eye(N, dtype=DT)
    mean = ksx @ torch.linalg.solve(kr, y)
    cov = kss - ksx @ torch.linalg.solve(kr, ksx.T)
    g = predict.gp_inference(k, y, diag_reg=diag_reg, diag_reg_absolute_scale=absolute)(ksx, kss)
    assert isinstance(g, predict.Gaussian)
    torch.testing.assert_close(g.mean, mean, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(g.covariance, cov, rtol=1e-9, atol=1e-11)
    only_mean = predict.gp_inference(k, y, diag_reg=diag_reg, diag_reg_absolute_scale=absolute)(ksx)
    assert only_mean.covariance is None
    torch.testing.assert_close(only_mean.mean, mean, rtol=1e-9, atol=1e-11)


def test_one_dimensional_targets():
    k, ksx, _ = _split(_joint(3))
    y = torch.randn(N, dtype=DT, generator=torch.Generator().manual_seed(4))
    g = predict.gp_inference(k, y)(ksx)
    assert g.mean.shape == (M, 1)
    torch.testing.assert_close(g.mean[:, 0], ksx @ torch.linalg.solve(k, y), rtol=1e-9, atol=1e-11)


def test_nngp_posterior_is_the_conditional_of_the_joint_gaussian():
    g = torch.Generator().manual_seed(5)
    x, xt = torch.randn(N, 3, dtype=DT, generator=g), torch.randn(M, 3, dtype=DT, generator=g)
    y = torch.randn(N, 2, dtype=DT, generator=g)
    arch = nk.Sequential(nk.Linear(64, W_std=1.5, b_std=0.1), nk.Erf(), nk.Linear(2))
    joint = arch.kernel(torch.cat([x, xt])).nngp  # the prior over (f(X), f(X*)) of each output
    k, ksx, kss = _split(joint)
    post = predict.gp_inference(k, y)(arch.kernel(xt, x).nngp, arch.kernel(xt).nngp)
    # conditioning by the precision matrix of the joint: cov = (P_**)⁻¹, mean = −(P_**)⁻¹ P_*X y
    prec = torch.linalg.inv(joint)
    cov = torch.linalg.inv(prec[N:, N:])
    torch.testing.assert_close(post.covariance, cov, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(post.mean, -cov @ prec[N:, :N] @ y, rtol=1e-7, atol=1e-9)
    # and the posterior at the training points themselves is exact (noise-free)
    at_train = predict.gp_inference(k, y)(k, k)
    torch.testing.assert_close(at_train.mean, y, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(at_train.covariance, torch.zeros(N, N, dtype=DT), rtol=0, atol=1e-8)


def test_gp_mean_is_the_infinite_time_gradient_flow_with_zero_initial_outputs():
    k, ksx, _ = _split(_joint(6))
    y = torch.randn(N, 2, dtype=DT, generator=torch.Generator().manual_seed(7))
    gp = predict.gp_inference(k, y, diag_reg=0.01)(ksx)
    _, flow = predict.gradient_descent_mse(k, y, diag_reg=0.01)(None, 0.0, None, ksx)
    torch.testing.assert_close(gp.mean, flow, rtol=1e-9, atol=1e-11)


def test_errors():
    k, ksx, kss = _split(_joint(8))
    y = torch.zeros(N, 1, dtype=DT)
    k4 = torch.einsum("ab,ij->abij", k, torch.eye(2, dtype=DT))
    with pytest.raises(ValueError, match=r"\(N, N\) kernel"):
        predict.gp_inference(k4, torch.zeros(N, 2, dtype=DT))
    with pytest.raises(ValueError, match="square"):
        predict.gp_inference(k[:, :-1], y)
    with pytest.raises(ValueError, match="symmetric"):
        predict.gp_inference(k + torch.triu(torch.ones_like(k), 1), y)
    with pytest.raises(ValueError, match=r"y_train must be \(N, O\)"):
        predict.gp_inference(k, y[:-1])
    with pytest.raises(ValueError, match="diag_reg"):
        predict.gp_inference(k, y, diag_reg=-1.0)
    p = predict.gp_inference(k, y)
    with pytest.raises(ValueError, match="k_test_train"):
        p(ksx[:, :-1])
    with pytest.raises(ValueError, match="k_test_test"):
        p(ksx, kss[:-1, :-1])
