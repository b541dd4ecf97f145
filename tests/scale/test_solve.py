"""Streamed CG against a direct solve and the in-memory predictors (issue 12).

Bounds from the math rather than from runs: CG stops when r = y − (K + λI)α has ‖r‖ ≤ tol·‖y‖, and then the
training-set predictions K·α differ from the exact ones K·(K + λI)⁻¹y by K(K + λI)⁻¹r, whose norm is at most
‖r‖ (the eigenvalues of K(K + λI)⁻¹ lie in [0, 1)). The direct solve in float64 adds at most
cond(K + λI)·N·ε relative, far below tol here (cond ≤ 1 + N/λ' with λ' = 1e-3 relative: ~1e5).
"""

import numpy as np
import pytest
import torch

import ntkit as nk
from ntkit import scale

ARCH = nk.Sequential(nk.Linear(256, b_std=0.1), nk.ReLU(), nk.Linear(256, b_std=0.1), nk.ReLU(), nk.Linear(1))
N, TILE, REG, TOL = 120, 32, 1e-3, 1e-9


@pytest.fixture(scope="module")
def problem(tmp_path_factory, client):
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(N, 4, generator=g, dtype=torch.float64), dim=1)
    y = torch.stack([torch.sin(3 * x[:, 0]), x[:, 1] * x[:, 2]], dim=1)
    path = tmp_path_factory.mktemp("solve") / "K.zarr"
    k = scale.kernel(ARCH, x, path=path, tile=TILE, dtype=torch.float64, client=client, progress=False)
    dense = torch.from_numpy(k.ntk.compute(scheduler="sync"))
    return k, x, y, dense


def test_cg_matches_a_direct_solve_and_the_preconditioner_cuts_iterations(problem):
    k, x, y, dense = problem
    lam = REG * float(dense.diagonal().mean())
    direct = torch.linalg.solve(dense + lam * torch.eye(N, dtype=torch.float64), y)
    iterations = {}
    for pre, landmarks in [(None, "random"), ("nystrom", "random"), ("nystrom", "pivoted")]:
        fit = scale.solve(k.ntk, y, diag_reg=REG, preconditioner=pre, landmarks=landmarks, rank=40, tol=TOL,
                          progress=False)  # fmt: skip
        assert fit.residuals[-1] <= TOL and fit.residual <= 10 * TOL  # recursive vs recomputed residual
        assert fit.alpha.shape == y.shape and fit.diag_reg_absolute == pytest.approx(lam, rel=1e-14)
        gap = (dense @ (fit.alpha - direct)).norm(dim=0) / y.norm(dim=0)
        assert float(gap.max()) <= 2 * TOL
        iterations[pre, landmarks] = fit.iterations
    assert iterations["nystrom", "random"] < iterations[None, "random"] / 2
    assert iterations["nystrom", "pivoted"] < iterations[None, "random"] / 2


def test_agrees_with_gp_inference_and_gradient_descent_at_infinite_time(problem, client):
    k, x, y, dense = problem
    fit = scale.solve(k.ntk, y[:, 0], diag_reg=REG, rank=40, tol=TOL, progress=False)
    assert fit.alpha.shape == (N,)
    x_test = torch.nn.functional.normalize(torch.randn(30, 4, generator=torch.Generator().manual_seed(1),
                                                       dtype=torch.float64), dim=1)  # fmt: skip
    f_test = scale.predict(ARCH, x_test, x, fit.alpha, tile=TILE, dtype=torch.float64, client=client, progress=False)
    k_test = ARCH.kernel(x_test, x).ntk
    gp = nk.predict.gp_inference(dense, y[:, 0], diag_reg=REG)(k_test).mean[:, 0]
    torch.testing.assert_close(f_test, gp, rtol=0, atol=1e-6 * float(gp.abs().max()))
    f_train, f_test_gd = nk.predict.gradient_descent_mse(dense, y[:, 0], diag_reg=REG)(None, k_test_train=k_test)
    # t = ∞ on the regularized kernel fits the targets: f_train = (K + λI)α* = y, and CG's (K + λI)α = y − r
    on_train = dense @ fit.alpha + fit.diag_reg_absolute * fit.alpha
    torch.testing.assert_close(on_train, f_train[:, 0], rtol=0, atol=2 * TOL * float(y[:, 0].norm()))
    torch.testing.assert_close(f_test, f_test_gd[:, 0], rtol=0, atol=1e-6 * float(gp.abs().max()))


def test_bad_input_and_non_convergence(problem, monkeypatch):
    k, x, y, dense = problem
    with pytest.raises(ValueError, match=f"y must be \\(N,\\) or \\(N, O\\) with N = {N}"):
        scale.solve(k.ntk, y[:-1], diag_reg=REG)
    with pytest.raises(TypeError, match="y must be a floating-point"):
        scale.solve(k.ntk, [1.0] * N, diag_reg=REG)
    with pytest.raises(TypeError, match="K must be a 2-D dask array"):
        scale.solve(dense, y, diag_reg=REG)
    with pytest.raises(ValueError, match="rank must be an int in"):
        scale.solve(k.ntk, y, diag_reg=REG, rank=N + 1)
    with pytest.raises(ValueError, match="diag_reg must be ≥ 0"):
        scale.solve(k.ntk, y, diag_reg=-1.0)
    with pytest.raises(TypeError, match="diag_reg must be a real number"):
        scale.solve(k.ntk, y, diag_reg="1e-4")
    with pytest.raises(ValueError, match="diag_reg must be finite"):
        scale.solve(k.ntk, y, diag_reg=float("inf"))
    import psutil

    with monkeypatch.context() as m:  # a machine with 100 kB free: the (N, rank) factors cannot fit
        m.setattr(psutil, "virtual_memory", lambda: type("Memory", (), {"available": 100_000})())
        with pytest.raises(ValueError, match="rank=40 needs about .* GiB for the Nyström preconditioner"):
            scale.solve(k.ntk, y, diag_reg=REG, rank=40)
    with pytest.raises(scale.ConvergenceError, match=r"relative residual \S+ after 3 iterations") as err:
        scale.solve(k.ntk, y, diag_reg=REG, preconditioner=None, tol=1e-12, max_iter=3, progress=False)
    assert err.value.result.iterations == 3 and err.value.result.residuals[-1] > 1e-12


def test_a_plain_dask_array_is_solved_too(problem):
    import dask.array as da

    k, x, y, dense = problem
    plain = da.from_array(dense.numpy(), chunks=TILE)
    a = scale.solve(plain, y, diag_reg=REG, rank=40, tol=TOL, progress=False)
    b = scale.solve(k.ntk, y, diag_reg=REG, rank=40, tol=TOL, progress=False)
    lam = REG * float(dense.diagonal().mean())
    direct = torch.linalg.solve(dense + lam * torch.eye(N, dtype=torch.float64), y)
    for fit in (a, b):
        assert float(((dense @ (fit.alpha - direct)).norm(dim=0) / y.norm(dim=0)).max()) <= 2 * TOL
    assert np.isfinite(a.residual)


def test_products_on_the_workers_of_a_real_cluster(problem):
    """The CG products as tasks on a LocalCluster of two worker processes (one row band of tiles per task)."""
    from distributed import get_task_stream

    from ntkit.scale._cluster import client_for
    from ntkit.scale._stream import StreamedMatrix

    k, x, y, dense = problem
    lam = REG * float(dense.diagonal().mean())
    direct = torch.linalg.solve(dense + lam * torch.eye(N, dtype=torch.float64), y)
    v = np.random.default_rng(0).standard_normal((N, 3))
    with client_for(None, n_workers=2) as c:
        settings = c.run(lambda: (__import__("dask").config.get("distributed.worker.profile.enabled"),
                                  __import__("os").environ.get("MALLOC_MMAP_THRESHOLD_")))  # fmt: skip
        assert set(settings.values()) == {(False, str(32 << 20))}  # ntkit's worker settings reached both workers
        with get_task_stream(client=c) as stream:
            product = StreamedMatrix(k.ntk, client=c).matmul(v)
            fit = scale.solve(k.ntk, y, diag_reg=REG, rank=40, tol=TOL, client=c, progress=False)
        names = [t["key"] if isinstance(t["key"], str) else t["key"][0] for t in stream.data]
    bands = -(-N // TILE)
    assert sum(name.startswith("band_product") for name in names) >= bands * (fit.iterations + 1)
    # the same sums in another order: each entry within 2·N·ε·(|K|·|v|) of the dense product
    exact = dense.numpy() @ v
    assert (np.abs(product - exact) <= 2 * N * np.finfo(np.float64).eps * (np.abs(dense.numpy()) @ np.abs(v))).all()
    assert fit.residuals[-1] <= TOL and fit.residual <= 10 * TOL
    assert float(((dense @ (fit.alpha - direct)).norm(dim=0) / y.norm(dim=0)).max()) <= 2 * TOL
