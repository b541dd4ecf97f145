"""``predict.gradient_descent`` (any loss, integrated as an ODE) against independent references.

* MSE, L = Σ(f − y)²/(2·f.numel()): the closed form ``gradient_descent_mse`` (itself checked against SGD and
  matrix exponentials in test_gradient_descent_mse.py), to 1e-8.
* Cross-entropy, L = −(1/N) Σ_n Σ_o y_no log softmax(f_n)_o (the mean over examples of the per-example
  cross-entropy, ``F.cross_entropy(f, labels)``), O = 3: a linearized network (``nk.linearize`` of an
  ``arch.build`` net, float64) trained here by full-batch ``torch.optim.SGD``, compared with the ODE run with its
  full (N, N, O, O) empirical NTK. For a linearized net one step is exactly f ← f − η Θ ∇_f L(f) in function
  space, which is checked against the SGD run to 1e-10 and then iterated with smaller steps (cheaply) to show
  the gap to the ODE shrinking ∝ η.
* Heavy-ball momentum m: torch's SGD(momentum=m) (buf ← m·buf + g, θ ← θ − η·buf) is, for a linearized net,
  v ← m·v − η Θ ∇L(f), f ← f + v in function space (checked against SGD to 1e-10). The ODE must approach that
  recursion as η → 0 at fixed η·steps, and — overdamped limit — the plain trajectory at t/(1 − m).
"""

import pytest
import torch
import torch.nn.functional as F

import ntkit as nk
from ntkit import predict

DT = torch.float64
N, M, D, O = 6, 3, 3, 3
LABELS = torch.tensor([0, 1, 2, 0, 1, 2])


def mse(f, y):
    return ((f - y) ** 2).sum() / (2 * f.numel())


def cross_entropy(f, y):
    return -(F.log_softmax(f, dim=-1) * y).sum() / f.shape[0]


def _mse_gradient(f, y):  # ∂L/∂f by hand
    return (f - y) / f.numel()


def _cross_entropy_gradient(f, y):  # rows of y sum to one
    return (torch.softmax(f, dim=-1) - y) / f.shape[0]


GRADIENTS = {mse: _mse_gradient, cross_entropy: _cross_entropy_gradient}


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _flat_kernel(k):
    """(N, N, O, O) → (N·O, N·O) with (n, o) → n·O + o, and the matching (N, O) → (N·O,) flattening of f."""
    a, b, o, _ = k.shape
    return k.permute(0, 2, 1, 3).reshape(a * o, b * o)


def _recursion(loss, k, kt, y, f0, g0, lr, steps, momentum=0.0, record=()):
    """Function-space GD / heavy ball with the full kernel: exact for a linearized network."""
    kf, ktf = _flat_kernel(k), _flat_kernel(kt)
    f, g = f0.clone(), g0.clone()
    vf, vg = torch.zeros_like(f), torch.zeros_like(g)
    out = {}
    for step in range(1, steps + 1):
        grad = GRADIENTS[loss](f, y)
        vf = momentum * vf - lr * (kf @ grad.reshape(-1)).reshape(f.shape)
        vg = momentum * vg - lr * (ktf @ grad.reshape(-1)).reshape(g.shape)
        f, g = f + vf, g + vg
        if step in record or step == steps:
            out[step] = (f, g)
    return out


@pytest.fixture(scope="module")
def problem():
    gen = torch.Generator().manual_seed(21)
    x = torch.randn(N, D, dtype=DT, generator=gen)
    xt = torch.randn(M, D, dtype=DT, generator=gen)
    arch = nk.Sequential(nk.Linear(256, W_std=1.5, b_std=0.1), nk.Erf(), nk.Linear(O))
    net = arch.build((D,), seed=2, dtype=DT)
    k = nk.empirical_ntk(net, x, output="full")
    kt = nk.empirical_ntk(net, xt, x, output="full")
    with torch.no_grad():
        f0, g0 = net(x), net(xt)
    y = F.one_hot(LABELS, O).to(DT)
    return dict(net=net, x=x, xt=xt, k=k, kt=kt, f0=f0, g0=g0, y=y)


def _sgd(p, loss, lr, steps, momentum=0.0, record=()):
    lin = nk.linearize(p["net"])
    opt = torch.optim.SGD(lin.theta.parameters(), lr=lr, momentum=momentum)
    out = {}
    for step in range(1, steps + 1):
        opt.zero_grad()
        loss(lin(p["x"]), p["y"]).backward()
        opt.step()
        if step in record or step == steps:
            with torch.no_grad():
                out[step] = (lin(p["x"]), lin(p["xt"]))
    return out


# --------------------------------------------------------------------------------------------------------------
# MSE: the closed form
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("coupled", [False, True], ids=["(N,N) kernel", "(N,N,O,O) kernel"])
def test_mse_loss_equals_the_closed_form(problem, coupled):
    k, kt = problem["k"], problem["kt"]
    if not coupled:
        k, kt = k.diagonal(dim1=2, dim2=3).mean(-1), kt.diagonal(dim1=2, dim2=3).mean(-1)
    y = torch.randn(N, O, dtype=DT, generator=torch.Generator().manual_seed(1))
    f0, g0 = problem["f0"], problem["g0"]
    times = [0.5, 3.0, 17.0, 60.0]
    ode = predict.gradient_descent(mse, k, y, learning_rate=0.7)
    exact = predict.gradient_descent_mse(k, y, learning_rate=0.7)
    fo, go = ode(times, f0, g0, kt)
    fe, ge = exact(times, f0, g0, kt)
    assert fo.shape == (len(times), N, O) and go.shape == (len(times), M, O)
    torch.testing.assert_close(fo, fe, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(go, ge, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(ode(3.0, f0), exact(3.0, f0), rtol=1e-8, atol=1e-8)  # scalar t, train only


def test_unsorted_times_come_back_in_the_given_order(problem):
    y = problem["y"]
    ode = predict.gradient_descent(mse, problem["k"], y)
    times = [9.0, 1.0, 4.0]
    out = ode(times, problem["f0"])
    for i, t in enumerate(times):
        torch.testing.assert_close(out[i], ode(t, problem["f0"]), rtol=1e-9, atol=1e-9)


def test_time_zero_returns_the_initial_outputs(problem):
    ode = predict.gradient_descent(mse, problem["k"], problem["y"])
    ft, gt = ode(0.0, problem["f0"], problem["g0"], problem["kt"])
    torch.testing.assert_close(ft, problem["f0"], rtol=0, atol=1e-12)
    torch.testing.assert_close(gt, problem["g0"], rtol=0, atol=1e-12)


def test_time_zero_inside_a_vector(problem):
    ode = predict.gradient_descent(mse, problem["k"], problem["y"])
    exact = predict.gradient_descent_mse(problem["k"], problem["y"])
    times = [0.0, 2.0, 5.0]
    torch.testing.assert_close(ode(times, problem["f0"]), exact(times, problem["f0"]), rtol=1e-8, atol=1e-8)


def test_repeated_times(problem):
    """A vector with a repeated time gives that time's outputs twice, as gradient_descent_mse does."""
    ode = predict.gradient_descent(mse, problem["k"], problem["y"])
    exact = predict.gradient_descent_mse(problem["k"], problem["y"])
    times = [2.0, 5.0, 2.0]
    torch.testing.assert_close(ode(times, problem["f0"]), exact(times, problem["f0"]), rtol=1e-8, atol=1e-8)


# --------------------------------------------------------------------------------------------------------------
# Cross-entropy: a linearized network trained by SGD
# --------------------------------------------------------------------------------------------------------------

T_CE = 20.0  # η·steps
LR_CE = 0.25


@pytest.fixture(scope="module")
def ce_sgd(problem):
    steps = round(T_CE / LR_CE)
    return _sgd(problem, cross_entropy, LR_CE, steps, record=(1, 10))


@pytest.fixture(scope="module")
def ce_ode(problem):
    p = problem
    return predict.gradient_descent(cross_entropy, p["k"], p["y"])(T_CE, p["f0"], p["g0"], p["kt"])


def test_cross_entropy_ode_matches_sgd_on_the_linearized_network(problem, ce_sgd, ce_ode):
    p = problem
    ft, gt = ce_ode
    assert _rel(p["f0"], ft) > 0.5 and _rel(p["g0"], gt) > 0.2  # far from the start
    assert float(cross_entropy(ft, p["y"])) < 0.5 * float(cross_entropy(p["f0"], p["y"]))
    fs, gs = ce_sgd[round(T_CE / LR_CE)]
    assert _rel(fs, ft) < 1e-2 and _rel(gs, gt) < 1e-2, (_rel(fs, ft), _rel(gs, gt))
    # the learning rate only rescales time: (lr = η, t) is (lr = 1, η·t)
    f2, g2 = predict.gradient_descent(cross_entropy, p["k"], p["y"], learning_rate=LR_CE)(
        T_CE / LR_CE, p["f0"], p["g0"], p["kt"]
    )
    torch.testing.assert_close(f2, ft, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(g2, gt, rtol=1e-7, atol=1e-8)


def test_function_space_recursion_is_exactly_sgd_on_the_linearized_network(problem, ce_sgd):
    p = problem
    rec = _recursion(cross_entropy, p["k"], p["kt"], p["y"], p["f0"], p["g0"], LR_CE, 10, record=(1,))
    for step in (1, 10):
        torch.testing.assert_close(rec[step][0], ce_sgd[step][0], rtol=0, atol=1e-10)
        torch.testing.assert_close(rec[step][1], ce_sgd[step][1], rtol=0, atol=1e-10)


def test_cross_entropy_ode_is_the_small_step_limit(problem, ce_ode):
    p = problem
    ft, gt = ce_ode
    errors = []
    for lr in (LR_CE, LR_CE / 4, LR_CE / 16):
        f, g = _recursion(cross_entropy, p["k"], p["kt"], p["y"], p["f0"], p["g0"], lr, round(T_CE / lr))[
            round(T_CE / lr)
        ]
        errors.append(max(_rel(f, ft), _rel(g, gt)))
    assert errors[0] < 1e-2 and errors[1] < 0.5 * errors[0] and errors[2] < 0.5 * errors[1], errors


# --------------------------------------------------------------------------------------------------------------
# Momentum
# --------------------------------------------------------------------------------------------------------------

MOMENTUM = 0.9


def test_heavy_ball_recursion_is_exactly_sgd_with_momentum(problem):
    p = problem
    sgd = _sgd(p, cross_entropy, 0.05, 30, momentum=MOMENTUM, record=(1, 5))
    rec = _recursion(cross_entropy, p["k"], p["kt"], p["y"], p["f0"], p["g0"], 0.05, 30, MOMENTUM, record=(1, 5))
    for step in (1, 5, 30):
        torch.testing.assert_close(rec[step][0], sgd[step][0], rtol=0, atol=1e-10)
        torch.testing.assert_close(rec[step][1], sgd[step][1], rtol=0, atol=1e-10)


def test_momentum_ode_approaches_heavy_ball_and_the_rescaled_plain_flow(problem):
    """MSE on the full kernel, physical time η·t = 2 (= 20 units of plain flow once divided by 1 − m).

    Heavy ball → ODE: the gap is a discretisation error that shrinks with η. ODE → plain flow at t/(1 − m): the
    overdamped limit, which needs η·λ/(N·O) ≪ (1 − m)² = 0.01 (here λ/(N·O) ≲ 0.3), hence the small rates."""
    p = problem
    y = p["y"]
    physical = 2.0
    plain_f, plain_g = predict.gradient_descent_mse(p["k"], y)(physical / (1 - MOMENTUM), p["f0"], p["g0"], p["kt"])
    heavy_ball_errors, rescaled_errors = [], []
    for lr in (0.00625, 0.0015625):
        steps = round(physical / lr)
        ode = predict.gradient_descent(mse, p["k"], y, learning_rate=lr, momentum=MOMENTUM)
        f, g = ode(steps, p["f0"], p["g0"], p["kt"])
        rf, rg = _recursion(mse, p["k"], p["kt"], y, p["f0"], p["g0"], lr, steps, MOMENTUM)[steps]
        heavy_ball_errors.append(max(_rel(f, rf), _rel(g, rg)))
        rescaled_errors.append(max(_rel(f, plain_f), _rel(g, plain_g)))
    assert heavy_ball_errors[1] < 5e-3 and heavy_ball_errors[1] < 0.5 * heavy_ball_errors[0], heavy_ball_errors
    assert rescaled_errors[1] < 1e-2 and rescaled_errors[1] < 0.5 * rescaled_errors[0], rescaled_errors


def test_momentum_shapes_and_loss_decrease(problem):
    p = problem
    ode = predict.gradient_descent(cross_entropy, p["k"], p["y"], learning_rate=0.1, momentum=MOMENTUM)
    times = [2.0, 10.0, 30.0]
    fts, gts = ode(times, p["f0"], p["g0"], p["kt"])
    assert fts.shape == (3, N, O) and gts.shape == (3, M, O)
    assert fts.dtype == DT and bool(torch.isfinite(fts).all() and torch.isfinite(gts).all())
    losses = [float(cross_entropy(f, p["y"])) for f in fts]
    assert losses[-1] < losses[0] < float(cross_entropy(p["f0"], p["y"])), losses
    ft, gt = ode(10.0, p["f0"], p["g0"], p["kt"])
    assert ft.shape == (N, O) and gt.shape == (M, O)
    torch.testing.assert_close(ft, fts[1], rtol=1e-7, atol=1e-8)


# --------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------


def test_errors(problem):
    k, y = problem["k"], problem["y"]
    for momentum in (-0.1, 1.0):
        with pytest.raises(ValueError, match="momentum"):
            predict.gradient_descent(mse, k, y, momentum=momentum)
    with pytest.raises(ValueError, match="learning_rate"):
        predict.gradient_descent(mse, k, y, learning_rate=0.0)
    ode = predict.gradient_descent(mse, k, y)
    with pytest.raises(ValueError, match="finite"):
        ode(None)
    with pytest.raises(ValueError, match="finite"):
        ode([1.0, float("inf")])
    with pytest.raises(ValueError, match="t must be"):
        ode(-1.0)
    with pytest.raises(ValueError, match="scalar"):
        predict.gradient_descent(lambda f, y: (f - y) ** 2, k, y)(1.0)
    with pytest.raises(ValueError, match="k_test_train"):
        ode(1.0, 0.0, None, problem["kt"][:, :-1])
    with pytest.raises(ValueError, match="y_train"):
        predict.gradient_descent(mse, k, y[:-1])


def test_k_test_train_that_is_not_a_tensor(problem):
    ode = predict.gradient_descent(mse, problem["k"], problem["y"])
    with pytest.raises(TypeError, match="k_test_train must be a torch.Tensor; got list"):
        ode(1.0, problem["f0"], None, problem["kt"].tolist())
