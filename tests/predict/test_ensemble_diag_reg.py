"""``gradient_descent_mse_ensemble`` with ``diag_reg > 0`` against independent computations (issue 10, item 4).

Convention under test (the docstring's): every train-train kernel is regularised, D̃ = D + ε s_D I and
K̃ = K + ε s_K I, in A(t) = D_{*X} D̃⁻¹ (I − e^{−ηtD̃/(NO)}) and in the A K̃ Aᵀ term; so for ``get="nngp"`` at t = ∞
the covariance is the GP posterior K_{**} − K_{*X} (K + εI)⁻¹ K_{X*}. The kernels come from a stub architecture
with fixed positive-definite kernels, so the references see exactly the matrices the ensemble sees:

* a direct float64 computation by ``torch.linalg.matrix_exp`` and ``torch.linalg.solve`` (no eigendecomposition);
* mpmath at 50 significant digits (``mp.expm``, ``mp.inverse``) on a small case.

Tolerances: a backward-stable float64 solve is exact to about κ·u (κ the condition number of D̃, u = 2⁻⁵³) relative
to the scale of the terms that cancel, ‖K_{**}‖; the bound used is 50·N·κ·u of that scale.
"""

from types import SimpleNamespace

import pytest
import torch

from ntkit import predict

mpmath = pytest.importorskip("mpmath")

DT = torch.float64
N, M, D = 5, 3, 2
EPS = 2.0**-53


class StubArch:
    """nngp(x, x') = exp(x·x'/2) and ntk = nngp · (2 + x·x'/2): both positive definite (Schur products)."""

    def kernel(self, x1, x2=None, **kwargs):
        x2 = x1 if x2 is None else x2
        dot = x1 @ x2.T / 2
        nngp = torch.exp(dot)
        return SimpleNamespace(nngp=nngp, ntk=nngp * (2 + dot))


def data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, dtype=DT, generator=g)
    xt = torch.randn(M, D, dtype=DT, generator=g)
    y = torch.randn(N, 2, dtype=DT, generator=g)
    return x, xt, y


def regularized(k: torch.Tensor, diag_reg: float) -> torch.Tensor:
    return k + diag_reg * k.diagonal().mean() * torch.eye(k.shape[0], dtype=k.dtype)


def direct(x, xt, y, get, t, diag_reg, lr):
    """mean and covariance by matrix_exp and solve, in float64."""
    arch = StubArch()
    kxx, ksx, kss = arch.kernel(x), arch.kernel(xt, x), arch.kernel(xt)
    d, dsx = regularized(getattr(kxx, get), diag_reg), getattr(ksx, get)
    k_reg = regularized(kxx.nngp, diag_reg)
    decay = torch.zeros(N, N, dtype=DT) if t is None else torch.linalg.matrix_exp(-lr * t / y.numel() * d)
    a = dsx @ torch.linalg.solve(d, torch.eye(N, dtype=DT) - decay)
    cov = kss.nngp + a @ k_reg @ a.T - a @ ksx.nngp.T - ksx.nngp @ a.T
    return a @ y, cov, torch.linalg.cond(d).item(), kss.nngp.abs().max().item()


def assert_within(actual, expected, kappa, scale):
    tol = 50 * N * kappa * EPS * scale
    err = (actual - expected).abs().max().item()
    assert err <= tol, f"max error {err:.3g} > {tol:.3g} (κ = {kappa:.3g})"


@pytest.mark.parametrize("diag_reg", [1e-3, 0.1, 1.0])
def test_nngp_covariance_at_infinite_time_is_the_gp_posterior(diag_reg):
    x, xt, y = data()
    arch = StubArch()
    kxx, ksx, kss = arch.kernel(x).nngp, arch.kernel(xt, x).nngp, arch.kernel(xt).nngp
    k_reg = regularized(kxx, diag_reg)
    posterior = kss - ksx @ torch.linalg.solve(k_reg, ksx.T)
    pred = predict.gradient_descent_mse_ensemble(arch, x, y, diag_reg=diag_reg)(None, xt, get="nngp", compute_cov=True)
    assert_within(pred.covariance, posterior, torch.linalg.cond(k_reg).item(), kss.abs().max().item())
    assert_within(pred.mean, ksx @ torch.linalg.solve(k_reg, y), torch.linalg.cond(k_reg).item(), y.abs().max().item())
    gp = predict.gp_inference(kxx, y, diag_reg=diag_reg)(ksx, kss)
    assert_within(pred.covariance, gp.covariance, torch.linalg.cond(k_reg).item(), kss.abs().max().item())


@pytest.mark.parametrize("t", [0.0, 0.5, 4.0, 60.0, None], ids=["t=0", "t=0.5", "t=4", "t=60", "t=inf"])
@pytest.mark.parametrize("get", ["ntk", "nngp"])
def test_any_time_and_kernel_match_a_direct_float64_solve(get, t):
    x, xt, y = data(1)
    lr, diag_reg = 0.8, 0.05
    mean, cov, kappa, scale = direct(x, xt, y, get, t, diag_reg, lr)
    ens = predict.gradient_descent_mse_ensemble(StubArch(), x, y, learning_rate=lr, diag_reg=diag_reg)
    pred = ens(t, xt, get=get, compute_cov=True)
    assert_within(pred.mean, mean, kappa, y.abs().max().item() * scale)
    assert_within(pred.covariance, cov, kappa, scale)


def mp_matrix(t: torch.Tensor):
    return mpmath.matrix(t.tolist())  # float64 → mpf is exact


@pytest.mark.parametrize("t", [1.0, 20.0, None], ids=["t=1", "t=20", "t=inf"])
@pytest.mark.parametrize("get", ["ntk", "nngp"])
def test_small_case_matches_mpmath_at_50_digits(get, t):
    x, xt, y = data(2)
    lr, diag_reg = 1.0, 0.02
    arch = StubArch()
    kxx, ksx, kss = arch.kernel(x), arch.kernel(xt, x), arch.kernel(xt)
    with mpmath.workdps(50):
        d_plain, k_plain = mp_matrix(getattr(kxx, get)), mp_matrix(kxx.nngp)
        eye = mpmath.eye(N)
        d = d_plain + diag_reg * sum(d_plain[i, i] for i in range(N)) / N * eye
        k_reg = k_plain + diag_reg * sum(k_plain[i, i] for i in range(N)) / N * eye
        decay = mpmath.zeros(N, N) if t is None else mpmath.expm(-lr * t / (2 * N) * d)
        a = mp_matrix(getattr(ksx, get)) * mpmath.inverse(d) * (eye - decay)
        ksx_k = mp_matrix(ksx.nngp)
        cov = mp_matrix(kss.nngp) + a * k_reg * a.T - a * ksx_k.T - ksx_k * a.T
        mean = a * mp_matrix(y)
        kappa = float(mpmath.norm(d, 2) * mpmath.norm(mpmath.inverse(d), 2))
        expected_cov = torch.tensor([[float(cov[i, j]) for j in range(M)] for i in range(M)], dtype=DT)
        expected_mean = torch.tensor([[float(mean[i, j]) for j in range(2)] for i in range(M)], dtype=DT)
    ens = predict.gradient_descent_mse_ensemble(arch, x, y, learning_rate=lr, diag_reg=diag_reg)
    pred = ens(t, xt, get=get, compute_cov=True)
    scale = kss.nngp.abs().max().item()
    assert_within(pred.covariance, expected_cov, kappa, scale)
    assert_within(pred.mean, expected_mean, kappa, y.abs().max().item() * scale)


def test_training_points_use_the_same_convention():
    """x_test=None is x_test=x_train: at t = ∞ the NNGP ensemble's covariance there is K − K (K + εI)⁻¹ K."""
    x, _, y = data(3)
    diag_reg = 0.1
    kxx = StubArch().kernel(x).nngp
    k_reg = regularized(kxx, diag_reg)
    ens = predict.gradient_descent_mse_ensemble(StubArch(), x, y, diag_reg=diag_reg)
    pred = ens(None, get="nngp", compute_cov=True)
    posterior = kxx - kxx @ torch.linalg.solve(k_reg, kxx)
    assert_within(pred.covariance, posterior, torch.linalg.cond(k_reg).item(), kxx.abs().max().item())
