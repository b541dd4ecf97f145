"""``predict.gradient_descent_mse`` against independent references.

* A linearized network (``nk.linearize`` of a finite ``arch.build`` net, float64) trained in this file by plain
  full-batch ``torch.optim.SGD`` on L = Σ(f − y)²/(2·N·O). For a linearized net one step moves the outputs by
  exactly −(η/(N·O))·Θ·(f − y) with Θ its full (N, N, O, O) empirical NTK, so ``discrete=True`` must match the
  SGD run to rounding, and the continuous flow at t = η·steps must match it up to an O(η) discretisation error
  that shrinks ∝ η at fixed η·steps.
* ``torch.linalg.matrix_exp`` of the kernel (finite t) and ``torch.linalg.solve`` (t = ∞, kernel ridge
  regression with K + diag_reg·mean(diag K)·I), the coupled (N, N, O, O) kernel flattened output-major
  (i·N + a), the opposite of the library's (a·O + i), so a layout slip would show.
"""

import re

import pytest
import torch

import ntkit as nk
from ntkit import predict

DT = torch.float64
N, M, D = 6, 3, 3
WIDTH = 256
T_FLOW = 10.0  # η·steps at which the SGD runs are compared with the flow
LR = 0.2  # the coarse SGD step; the fine one is LR / 4
DISCRETE_CHECKPOINTS = (1, 7, 50)  # step counts recorded from the coarse run (50 = T_FLOW / LR)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _psd(p, seed, jitter=0.1):
    a = torch.randn(p, p, dtype=DT, generator=_gen(seed))
    return a @ a.T / p + jitter * torch.eye(p, dtype=DT)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


# --------------------------------------------------------------------------------------------------------------
# A linearized network trained by SGD (module-scoped: the runs are the expensive part of this file)
# --------------------------------------------------------------------------------------------------------------


def _sgd(net, x, xt, y, lr, steps, record=()):
    """Full-batch SGD on lin.theta with L = Σ(f − y)² / (2·N·O); returns {step: (f_train, f_test)}."""
    lin = nk.linearize(net)
    n, o = y.shape
    opt = torch.optim.SGD(lin.theta.parameters(), lr=lr)
    out = {}
    for step in range(1, steps + 1):
        opt.zero_grad()
        loss = ((lin(x) - y) ** 2).sum() / (2 * n * o)
        loss.backward()
        opt.step()
        if step in record or step == steps:
            with torch.no_grad():
                out[step] = (lin(x), lin(xt))
    return out


@pytest.fixture(scope="module", params=[1, 2], ids=["O=1 (N,N) kernel", "O=2 full (N,N,O,O) kernel"])
def trained(request):
    o = request.param
    g = _gen(10 + o)
    x = torch.randn(N, D, dtype=DT, generator=g)
    xt = torch.randn(M, D, dtype=DT, generator=g)
    y = torch.randn(N, o, dtype=DT, generator=g)
    arch = nk.Sequential(nk.Linear(WIDTH, W_std=1.5, b_std=0.1), nk.Erf(), nk.Linear(o))
    net = arch.build((D,), seed=3, dtype=DT)
    if o == 1:  # a single output: the (N, N) kernel is the whole NTK
        k, kt = nk.empirical_ntk(net, x, output="mean"), nk.empirical_ntk(net, xt, x, output="mean")
    else:  # several outputs: the cross-output terms matter, use the full kernel
        k, kt = nk.empirical_ntk(net, x, output="full"), nk.empirical_ntk(net, xt, x, output="full")
    with torch.no_grad():
        f0, g0 = net(x), net(xt)
    steps = round(T_FLOW / LR)
    coarse = _sgd(net, x, xt, y, LR, steps, record=DISCRETE_CHECKPOINTS)
    fine = _sgd(net, x, xt, y, LR / 4, 4 * steps)
    return dict(k=k, kt=kt, y=y, f0=f0, g0=g0, coarse=coarse[steps], fine=fine[4 * steps], checkpoints=coarse)


def test_continuous_flow_matches_small_step_sgd_on_the_linearized_network(trained):
    p = predict.gradient_descent_mse(trained["k"], trained["y"])
    ft, gt = p(T_FLOW, trained["f0"], trained["g0"], trained["kt"])
    # the comparison is meaningful: the outputs have moved a lot from their initial values
    assert _rel(trained["f0"], ft) > 0.2 and _rel(trained["g0"], gt) > 0.1
    errors = {}
    for name, (a, b) in (("coarse", trained["coarse"]), ("fine", trained["fine"])):
        errors[name] = (_rel(a, ft), _rel(b, gt))
        assert errors[name][0] < 1e-2 and errors[name][1] < 1e-2, (name, errors[name])
    # first-order discretisation error: a 4× smaller step at fixed η·steps cuts it by about 4 (assert > 2)
    assert errors["fine"][0] < 0.5 * errors["coarse"][0], errors
    assert errors["fine"][1] < 0.5 * errors["coarse"][1], errors


def test_flow_time_scales_with_learning_rate(trained):
    """t counts steps of size learning_rate: (lr=η, t) is the same flow as (lr=1, η·t)."""
    k, y, f0, g0, kt = trained["k"], trained["y"], trained["f0"], trained["g0"], trained["kt"]
    a = predict.gradient_descent_mse(k, y, learning_rate=LR)(T_FLOW / LR, f0, g0, kt)
    b = predict.gradient_descent_mse(k, y)(T_FLOW, f0, g0, kt)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_discrete_recursion_matches_sgd_exactly(trained):
    p = predict.gradient_descent_mse(trained["k"], trained["y"], learning_rate=LR, discrete=True)
    fts, gts = p(list(DISCRETE_CHECKPOINTS), trained["f0"], trained["g0"], trained["kt"])
    assert fts.shape == (len(DISCRETE_CHECKPOINTS), *trained["y"].shape)
    for i, step in enumerate(DISCRETE_CHECKPOINTS):
        a, b = trained["checkpoints"][step]
        torch.testing.assert_close(fts[i], a, rtol=0, atol=1e-10)
        torch.testing.assert_close(gts[i], b, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------------------------------------------
# Closed-form references on random kernels
# --------------------------------------------------------------------------------------------------------------


def _problem(o, coupled, seed=0):
    """Random kernels, targets and initial outputs; also the output-major matrices the references use."""
    g = _gen(100 + seed)
    if coupled:
        b = _psd(N * o, seed)  # B[i·N + a, j·N + b] = K[a, b, i, j]
        k = b.reshape(o, N, o, N).permute(1, 3, 0, 2).contiguous()
        c = torch.randn(M * o, N * o, dtype=DT, generator=g)
        kt = c.reshape(o, M, o, N).permute(1, 3, 0, 2).contiguous()
    else:
        k = _psd(N, seed)
        kt = torch.randn(M, N, dtype=DT, generator=g)
        b = torch.kron(torch.eye(o, dtype=DT), k)  # output-major: block diagonal, one block per output
        c = torch.kron(torch.eye(o, dtype=DT), kt)
    y = torch.randn(N, o, dtype=DT, generator=g)
    f0 = torch.randn(N, o, dtype=DT, generator=g)
    g0 = torch.randn(M, o, dtype=DT, generator=g)
    return k, kt, y, f0, g0, b, c


def _vec(f):  # (n, o) -> output-major vector
    return f.T.reshape(-1)


def _unvec(v, o):
    return v.reshape(o, -1).T


def _reference_flow(b, c, y, f0, g0, lr, t, diag_reg=0.0):
    """f_X(t) = y + e^{−rtB}(f0 − y),  f_*(t) = g0 − C B⁻¹ (I − e^{−rtB}) (f0 − y),  r = lr/(N·O)."""
    o = y.shape[1]
    bb = b + diag_reg * b.diagonal().mean() * torch.eye(b.shape[0], dtype=DT)
    r0 = _vec(f0) - _vec(y)
    if t is None:
        train = _vec(y)
        test = _vec(g0) - c @ torch.linalg.solve(bb, r0)
    else:
        e = torch.linalg.matrix_exp(-lr / y.numel() * t * bb)
        train = _vec(y) + e @ r0
        test = _vec(g0) - c @ torch.linalg.solve(bb, r0 - e @ r0)
    return _unvec(train, o), _unvec(test, o)


@pytest.mark.parametrize("diag_reg", [0.0, 0.1])
@pytest.mark.parametrize("t", [0.7, 13.0, None], ids=["t=0.7", "t=13", "t=inf"])
@pytest.mark.parametrize("o,coupled", [(1, False), (3, False), (3, True)], ids=["NN-O1", "NN-O3", "NNOO-O3"])
def test_flow_equals_matrix_exponential_and_kernel_ridge_regression(o, coupled, t, diag_reg):
    k, kt, y, f0, g0, b, c = _problem(o, coupled)
    lr = 0.8
    ft, gt = predict.gradient_descent_mse(k, y, learning_rate=lr, diag_reg=diag_reg)(t, f0, g0, kt)
    rf, rg = _reference_flow(b, c, y, f0, g0, lr, t, diag_reg)
    torch.testing.assert_close(gt, rg, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(ft, rf, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("diag_reg", [0.0, 0.05])
def test_infinite_time_is_kernel_ridge_regression_solved_directly(diag_reg):
    """t = ∞ with f0 = g0 = 0: f_* = K_{*X} (K + diag_reg·mean(diag K)·I)⁻¹ y and, without ridge, f_X = y."""
    k, kt, y, *_ = _problem(2, False, seed=4)
    ft, gt = predict.gradient_descent_mse(k, y, diag_reg=diag_reg)(None, 0.0, None, kt)
    reg = k + diag_reg * k.diagonal().mean() * torch.eye(N, dtype=DT)
    torch.testing.assert_close(gt, kt @ torch.linalg.solve(reg, y), rtol=1e-10, atol=1e-12)
    if diag_reg == 0:
        torch.testing.assert_close(ft, y, rtol=1e-10, atol=1e-12)


def test_block_diagonal_full_kernel_equals_the_per_output_kernel():
    k, kt, y, f0, g0, *_ = _problem(3, False, seed=2)
    eye = torch.eye(3, dtype=DT)
    k4, kt4 = torch.einsum("ab,ij->abij", k, eye), torch.einsum("ab,ij->abij", kt, eye)
    for t in (2.5, None):
        a = predict.gradient_descent_mse(k, y, diag_reg=0.01)(t, f0, g0, kt)
        b = predict.gradient_descent_mse(k4, y, diag_reg=0.01)(t, f0, g0, kt4)
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("discrete", [False, True])
@pytest.mark.parametrize("coupled", [False, True])
def test_vector_of_times_is_a_leading_axis_equal_to_separate_calls(coupled, discrete):
    k, kt, y, f0, g0, *_ = _problem(2, coupled, seed=5)
    p = predict.gradient_descent_mse(k, y, learning_rate=0.5, discrete=discrete)
    times = [0, 3, 1, 20, float("inf")]
    fts, gts = p(times, f0, g0, kt)
    assert fts.shape == (len(times), N, 2) and gts.shape == (len(times), M, 2)
    for i, t in enumerate(times):
        a, b = p(None if t == float("inf") else t, f0, g0, kt)
        torch.testing.assert_close(fts[i], a, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gts[i], b, rtol=1e-12, atol=1e-12)
    # train outputs alone (no k_test_train) keep the time axis too
    assert p(times, f0).shape == (len(times), N, 2)
    assert p(3, f0).shape == (N, 2)


@pytest.mark.parametrize("discrete", [False, True])
@pytest.mark.parametrize("coupled", [False, True])
def test_time_zero_returns_the_initial_outputs(coupled, discrete):
    k, kt, y, f0, g0, *_ = _problem(2, coupled, seed=6)
    ft, gt = predict.gradient_descent_mse(k, y, learning_rate=0.5, discrete=discrete)(0.0, f0, g0, kt)
    torch.testing.assert_close(ft, f0, rtol=0, atol=1e-12)
    torch.testing.assert_close(gt, g0, rtol=0, atol=1e-12)


def test_scalar_initial_outputs_broadcast_and_default_to_zero():
    k, kt, y, *_ = _problem(2, False, seed=7)
    p = predict.gradient_descent_mse(k, y)
    a = p(4.0, 0.0, None, kt)
    b = p(4.0, torch.zeros(N, 2, dtype=DT), torch.zeros(M, 2, dtype=DT), kt)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = p(4.0, 0.3, -0.2, kt)
    d = p(4.0, torch.full((N, 2), 0.3, dtype=DT), torch.full((M, 2), -0.2, dtype=DT), kt)
    torch.testing.assert_close(c, d, rtol=1e-13, atol=1e-13)


def test_one_dimensional_targets_are_a_single_output():
    k, kt, y, f0, g0, *_ = _problem(1, False, seed=8)
    a = predict.gradient_descent_mse(k, y[:, 0])(2.0, f0, g0, kt)
    b = predict.gradient_descent_mse(k, y)(2.0, f0, g0, kt)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("discrete", [False, True])
def test_infinite_time_is_the_limit_for_a_singular_kernel(discrete):
    """A rank-deficient kernel: the flow never moves the residual along its null space, so for t → ∞ the train
    outputs tend to f0 + P (y − f0) with P the projection on the kernel's range (not to y); t = None must be that
    limit, as the test outputs (a pseudo-inverse) already are."""
    g = _gen(9)
    v = torch.randn(N, 2, dtype=DT, generator=g)
    k = v @ v.T  # rank 2
    kt = torch.randn(M, 2, dtype=DT, generator=g) @ v.T
    y = torch.randn(N, 1, dtype=DT, generator=g)
    f0 = torch.randn(N, 1, dtype=DT, generator=g)
    p = predict.gradient_descent_mse(k, y, learning_rate=0.5, discrete=discrete)
    proj = k @ torch.linalg.pinv(k)
    limit_train = f0 + proj @ (y - f0)
    limit_test = kt @ torch.linalg.pinv(k) @ (y - f0)
    late_train, late_test = p(10**7, f0, None, kt)  # every nonzero mode has long converged
    torch.testing.assert_close(late_train, limit_train, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(late_test, limit_test, rtol=1e-8, atol=1e-8)
    inf_train, inf_test = p(None, f0, None, kt)
    torch.testing.assert_close(inf_test, limit_test, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(inf_train, limit_train, rtol=1e-8, atol=1e-8)


# --------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------


def _ok():
    k, kt, y, f0, g0, *_ = _problem(2, False, seed=11)
    return k, kt, y


@pytest.mark.parametrize(
    "kernel",
    [torch.zeros(N, N + 1, dtype=DT), torch.zeros(N, dtype=DT), torch.zeros(N, N, 2, 3, dtype=DT),
     torch.zeros(N, N, 2, dtype=DT)],
    ids=["N x N+1", "1-D", "N,N,2,3", "3-D"],
)  # fmt: skip
def test_non_square_kernel_is_rejected(kernel):
    y = torch.zeros(N, 2, dtype=DT)
    with pytest.raises(ValueError, match="square"):
        predict.gradient_descent_mse(kernel, y)


def test_non_symmetric_kernel_is_rejected():
    k, _, y = _ok()
    bad = k.clone()
    bad[0, 1] += 0.1
    with pytest.raises(ValueError, match="symmetric"):
        predict.gradient_descent_mse(bad, y)
    k4 = torch.einsum("ab,ij->abij", k, torch.eye(2, dtype=DT)).clone()
    k4[0, 1, 0, 1] += 0.1  # the (a·O + i) matrix is asymmetric, though each (N, N) slice is fine
    with pytest.raises(ValueError, match="symmetric"):
        predict.gradient_descent_mse(k4, y)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_kernel_is_rejected(value):
    k, _, y = _ok()
    bad = k.clone()
    bad[2, 2] = value
    with pytest.raises(ValueError, match="NaN or Inf"):
        predict.gradient_descent_mse(bad, y)


def test_integer_kernel_is_a_type_error():
    with pytest.raises(TypeError, match="floating-point"):
        predict.gradient_descent_mse(torch.eye(N, dtype=torch.int64), torch.zeros(N, 1, dtype=DT))


def test_target_mismatch_is_rejected():
    k, _, y = _ok()
    with pytest.raises(ValueError, match=r"y_train must be \(N, O\) with N = 6"):
        predict.gradient_descent_mse(k, y[:-1])
    with pytest.raises(ValueError, match="y_train"):
        predict.gradient_descent_mse(k, y[:, :, None])
    k4 = torch.einsum("ab,ij->abij", k, torch.eye(3, dtype=DT))
    with pytest.raises(ValueError, match="outputs but the"):
        predict.gradient_descent_mse(k4, y)  # y has O = 2, the kernel O = 3
    with pytest.raises(ValueError, match="NaN or Inf"):
        predict.gradient_descent_mse(k, torch.full_like(y, float("nan")))


@pytest.mark.parametrize("t", [-1.0, [1.0, -0.5], float("nan")], ids=["-1", "vector with -0.5", "nan"])
def test_negative_or_nan_time_is_rejected(t):
    k, _, y = _ok()
    with pytest.raises(ValueError, match="t must be"):
        predict.gradient_descent_mse(k, y)(t)


def test_test_train_kernel_of_the_wrong_shape_is_rejected():
    k, kt, y = _ok()
    p = predict.gradient_descent_mse(k, y)
    with pytest.raises(ValueError, match=r"k_test_train must be \(M, N\)"):
        p(1.0, 0.0, None, kt[:, :-1])
    with pytest.raises(ValueError, match=r"k_test_train must be \(M, N\)"):
        p(1.0, 0.0, None, kt.T[:, :, None])
    k4 = torch.einsum("ab,ij->abij", k, torch.eye(2, dtype=DT))
    p4 = predict.gradient_descent_mse(k4, y)
    with pytest.raises(ValueError, match=r"k_test_train must be \(M, N, O, O\)"):
        p4(1.0, 0.0, None, kt)  # an (M, N) kernel for a coupled problem
    with pytest.raises(ValueError, match=r"k_test_train must be \(M, N, O, O\)"):
        p4(1.0, 0.0, None, torch.einsum("ab,ij->abij", kt, torch.eye(3, dtype=DT)))


@pytest.mark.parametrize("coupled", [False, True])
def test_discrete_learning_rate_above_the_bound_is_rejected_and_the_message_states_it(coupled):
    k, _, y, *_ = _problem(2, coupled, seed=12)
    matrix = k if not coupled else k.permute(0, 2, 1, 3).reshape(2 * N, 2 * N)
    bound = 2 * y.numel() / float(torch.linalg.eigvalsh(matrix)[-1])  # 2·N·O/λ_max, by hand
    predict.gradient_descent_mse(k, y, learning_rate=0.999 * bound, discrete=True)  # fine
    with pytest.raises(ValueError, match="max_learning_rate") as info:
        predict.gradient_descent_mse(k, y, learning_rate=1.001 * bound, discrete=True)
    numbers = [float(s) for s in re.findall(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", str(info.value))]
    assert any(abs(v - bound) <= 1e-5 * bound for v in numbers), (str(info.value), bound)
    predict.gradient_descent_mse(k, y, learning_rate=1.001 * bound, discrete=False)  # the flow is always stable


@pytest.mark.parametrize("lr", [0.0, -0.1])
@pytest.mark.parametrize("discrete", [False, True])
def test_non_positive_learning_rate_is_rejected(lr, discrete):
    k, _, y = _ok()
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        predict.gradient_descent_mse(k, y, learning_rate=lr, discrete=discrete)


def test_negative_diag_reg_is_rejected():
    k, _, y = _ok()
    with pytest.raises(ValueError, match="diag_reg"):
        predict.gradient_descent_mse(k, y, diag_reg=-0.1)
