"""ntkit.gpytorch: an ExactGP on the NNGP trains W_std and b_std with Adam, and predicts what ntkit.predict.gp_inference
predicts at the same hyperparameters.

On the Cholesky path (N ≤ 800, GPyTorch's default) both sides solve the same float64 system by Cholesky, so they
agree to κ·ε ≈ 1e-13 here; the issue's bound is 1e-6. On the conjugate-gradient path (BBMM, forced by
max_cholesky_size(0)) the accuracy is that of GPyTorch's CG, which stalls at a relative residual of ~1e-5 on such
systems whatever its tolerance: the reference is GPyTorch's own ``linear_cg`` on the same matrix, written out
densely, and the kernel's CG predictions must be as close to the exact ones as that (within a factor 10).
"""

import warnings

import pytest
import torch

gpytorch = pytest.importorskip("gpytorch")

from linear_operator.utils.linear_cg import linear_cg  # noqa: E402

from ntkit.gpytorch import InfiniteWidthKernel  # noqa: E402
from ntkit.predict import gp_inference  # noqa: E402
from ntkit.sklearn import default_mlp, with_scales  # noqa: E402

DT = torch.float64


class _GP(gpytorch.models.ExactGP):
    def __init__(self, x, y, likelihood, kernel):
        super().__init__(x, y, likelihood)
        self.mean, self.cov = gpytorch.means.ZeroMean(), kernel

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean(x), self.cov(x))


def _data(n=40, m=7):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g, dtype=DT)
    y = torch.sin(2 * x[:, 0]) + 0.05 * torch.randn(n, generator=g, dtype=DT)
    return x, y, torch.randn(m, 3, generator=g, dtype=DT)


@pytest.fixture(scope="module")
def trained():
    x, y, x_test = _data()
    likelihood = gpytorch.likelihoods.GaussianLikelihood().to(DT)
    model = _GP(x, y, likelihood, InfiniteWidthKernel(W_std=0.8, b_std=0.2)).to(DT)
    model.train()
    likelihood.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        loss = -mll(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    likelihood.eval()
    return model, likelihood, losses, (x, y, x_test)


def _reference(model, likelihood, x, y, x_test):
    w, b, noise = float(model.cov.W_std), float(model.cov.b_std), float(likelihood.noise)
    arch = with_scales(default_mlp(), w, b)
    k = arch.kernel(x).nngp
    posterior = gp_inference(k, y, diag_reg=noise, diag_reg_absolute_scale=True)
    return posterior(arch.kernel(x_test, x).nngp, arch.kernel(x_test).nngp), k + noise * torch.eye(len(x), dtype=DT)


def test_exact_gp_trains_the_scales_and_predicts_as_gp_inference(trained):
    model, likelihood, losses, (x, y, x_test) = trained
    assert losses[-1] < losses[0] - 0.1  # Adam lowered the negative marginal likelihood
    assert float(model.cov.W_std) != pytest.approx(0.8, abs=0.05) and float(model.cov.b_std) > 0
    with torch.no_grad():
        prediction = model(x_test)
    expected, _ = _reference(model, likelihood, x, y, x_test)
    torch.testing.assert_close(prediction.mean, expected.mean[:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(prediction.covariance_matrix, expected.covariance, rtol=0, atol=1e-6)
    with torch.no_grad():
        diag = model.cov(x_test, diag=True)
    torch.testing.assert_close(diag, with_scales(default_mlp(), float(model.cov.W_std), float(model.cov.b_std))
                               .kernel(x_test).nngp.diagonal(), rtol=1e-12, atol=0)  # fmt: skip


def test_conjugate_gradient_path_runs_and_is_as_accurate_as_gpytorch_cg(trained):
    model, likelihood, _, (x, y, x_test) = trained
    expected, system = _reference(model, likelihood, x, y, x_test)
    exact = torch.linalg.solve(system, y.unsqueeze(1))
    settings = (gpytorch.settings.max_cholesky_size(0), gpytorch.settings.eval_cg_tolerance(1e-10),
                gpytorch.settings.cg_tolerance(1e-10), gpytorch.settings.max_cg_iterations(200))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CG's own "terminated in 200 iterations" notice
        with torch.no_grad(), settings[0], settings[1], settings[2], settings[3]:
            cg_model = _GP(x, y, likelihood, model.cov)
            cg_model.eval()
            mean = cg_model(x_test).mean
            dense_cg = linear_cg(lambda v: system @ v, y.unsqueeze(1), tolerance=1e-10, max_iter=200)
    scale = float(torch.linalg.norm(expected.mean) / torch.linalg.norm(exact))  # from the solution to the mean
    cg_error = float((dense_cg - exact).abs().max()) * scale
    error = float((mean - expected.mean[:, 0]).abs().max())
    assert error <= 10 * cg_error + 1e-10, (error, cg_error)


def test_bad_input():
    with pytest.raises(ValueError, match="get must be one of"):
        InfiniteWidthKernel(get="rbf")
    with pytest.raises(ValueError, match="W_std"):
        InfiniteWidthKernel(W_std=0.0)
    with pytest.raises(TypeError, match="arch must be an ntkit layer spec"):
        InfiniteWidthKernel(arch="mlp")
    with pytest.raises(ValueError, match="without batch dimensions"):
        InfiniteWidthKernel()(torch.randn(2, 4, 3, dtype=DT)).to_dense()
