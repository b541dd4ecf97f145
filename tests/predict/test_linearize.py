"""``nk.linearize`` / ``nk.taylor_expand`` against the network itself and brute-force autograd.

References: the wrapped network evaluated at θ0 + Δ (``torch.func.functional_call``), its Jacobian at θ0 row by
row with ``torch.autograd.grad`` (so the first-order term must be J·Δ), and polynomial networks (products of
bias-free linear layers, degree d in θ) whose Taylor expansion of degree ≥ d is exact. Every Taylor model here
is moved by writing the same Δ into its ``.theta``.
"""

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

import ntkit as nk

DT = torch.float64
N, D = 5, 3


def _x(n=N, seed=0):
    return torch.randn(n, D, dtype=DT, generator=torch.Generator().manual_seed(seed))


def _net(o=2, width=64, seed=1):
    arch = nk.Sequential(nk.Linear(width, W_std=1.5, b_std=0.1), nk.Erf(), nk.Linear(o, b_std=0.2))
    return arch.build((D,), seed=seed, dtype=DT)


def _torch_net(seed=2):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 3)).to(DT)


def _trainable(model):
    return {k: p for k, p in model.named_parameters() if p.requires_grad}


def _random_delta(model, scale, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(p.shape, dtype=DT, generator=g) for p in _trainable(model).values()]


def _set(taylor, model, delta):
    """θ = θ0 + Δ in a Taylor model."""
    with torch.no_grad():
        for th, p0, d in zip(taylor.theta, _trainable(model).values(), delta, strict=True):
            th.copy_(p0 + d)
    return taylor


def _model_at(model, x, delta):
    params = {k: p.detach() + d for (k, p), d in zip(_trainable(model).items(), delta, strict=True)}
    return functional_call(model, params, (x,)).detach()


def _jacobian(model, x):
    """(N·O, P) by one autograd call per output value."""
    params = list(_trainable(model).values())
    out = model(x).reshape(-1)
    rows = []
    for i in range(out.numel()):
        grads = torch.autograd.grad(out[i], params, retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


MODELS = {"ntk-param erf net": _net, "torch tanh/gelu net": _torch_net}


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_at_theta0_every_degree_equals_the_model(make):
    model, x = make(), _x()
    with torch.no_grad():
        f = model(x)
        for taylor in (nk.linearize(model), nk.taylor_expand(model), nk.taylor_expand(model, degree=3)):
            torch.testing.assert_close(taylor(x), f, rtol=0, atol=1e-14)


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_degree_one_expansion_equals_linearize_and_is_f0_plus_j_delta(make):
    model, x = make(), _x()
    delta = _random_delta(model, 0.3)
    lin = _set(nk.linearize(model), model, delta)
    one = _set(nk.taylor_expand(model, degree=1), model, delta)
    jd = _jacobian(model, x) @ torch.cat([d.reshape(-1) for d in delta])
    with torch.no_grad():
        f0 = model(x)
        torch.testing.assert_close(one(x), lin(x), rtol=0, atol=1e-13)
        torch.testing.assert_close(lin(x), f0 + jd.reshape(f0.shape), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_linearized_output_is_exactly_linear_in_the_displacement(make):
    model, x = make(), _x()
    d1, d2 = _random_delta(model, 0.5, seed=4), _random_delta(model, 0.5, seed=5)
    lin = nk.linearize(model)

    def change(delta):
        with torch.no_grad():
            return _set(lin, model, delta)(x) - model(x)

    a, b = change(d1), change(d2)
    assert float(a.abs().max()) > 0.1  # a real move
    torch.testing.assert_close(change([2 * d for d in d1]), 2 * a, rtol=0, atol=1e-12)
    torch.testing.assert_close(change([-0.7 * d for d in d1]), -0.7 * a, rtol=0, atol=1e-12)
    torch.testing.assert_close(change([u + v for u, v in zip(d1, d2, strict=True)]), a + b, rtol=0, atol=1e-12)


def _one_sgd_step(model, x, lr, seed=6):
    """Δ of one SGD step of the real network on a random target (MSE)."""
    target = torch.randn(model(x).shape, dtype=DT, generator=torch.Generator().manual_seed(seed))
    real = copy.deepcopy(model)
    opt = torch.optim.SGD([p for p in real.parameters() if p.requires_grad], lr=lr)
    opt.zero_grad()
    ((real(x) - target) ** 2).sum().backward()
    opt.step()
    delta = [(p - p0).detach() for p, p0 in zip(_trainable(real).values(), _trainable(model).values(), strict=True)]
    return delta


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_higher_degree_is_closer_to_the_trained_network_with_the_right_order(make):
    """After one SGD step Δ, |f − f_deg1| = O(|Δ|²) and |f − f_deg2| = O(|Δ|³): halving Δ divides the errors by
    about 4 and 8; degree 2 is closer than degree 1, degree 3 closer still."""
    model, x = make(), _x()
    base = _one_sgd_step(model, x, lr=0.01)
    errors = {}
    for scale in (1.0, 0.5):
        delta = [scale * d for d in base]
        real = _model_at(model, x, delta)
        with torch.no_grad():
            for degree in (1, 2, 3):
                taylor = _set(nk.taylor_expand(model, degree=degree), model, delta)
                errors[degree, scale] = float((taylor(x) - real).norm())
    moved = float((_model_at(model, x, base) - model(x).detach()).norm())
    assert moved > 100 * errors[1, 1.0], (moved, errors)  # a small step that still moves the outputs
    assert errors[3, 1.0] < errors[2, 1.0] < errors[1, 1.0], errors
    assert 3.0 < errors[1, 1.0] / errors[1, 0.5] < 5.0, errors
    assert 6.0 < errors[2, 1.0] / errors[2, 0.5] < 10.0, errors


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_expansion_is_exact_for_a_polynomial_network(layers):
    """A product of `layers` bias-free linear maps is a polynomial of degree `layers` in θ: its Taylor model of
    that degree or higher is the network at any θ, and one degree lower is not."""
    torch.manual_seed(7)
    model = nn.Sequential(*[nn.Linear(D if i == 0 else 4, 4, bias=False) for i in range(layers)]).to(DT)
    x = _x()
    delta = _random_delta(model, 0.8, seed=8)
    real = _model_at(model, x, delta)
    with torch.no_grad():
        for degree in range(1, 5):
            out = _set(nk.taylor_expand(model, degree=degree), model, delta)(x)
            if degree >= layers:
                torch.testing.assert_close(out, real, rtol=1e-11, atol=1e-12)
            else:
                assert float((out - real).abs().max()) > 1e-3, degree


@pytest.mark.parametrize("method", ["jacobian_contraction", "ntk_vector_products", "structured", "auto"])
def test_empirical_ntk_of_the_linearized_model_is_that_of_the_model_at_theta0_and_stays_constant(method):
    model, x = _net(o=2, width=32), _x()
    expected = nk.empirical_ntk(model, x, output="full", method="jacobian_contraction")
    lin = nk.linearize(model)
    torch.testing.assert_close(nk.empirical_ntk(lin, x, output="full", method=method), expected, rtol=1e-12,
                               atol=1e-12)  # fmt: skip
    _set(lin, model, _random_delta(model, 0.5, seed=9))  # away from θ0 the tangent kernel is unchanged
    torch.testing.assert_close(nk.empirical_ntk(lin, x, output="full", method=method), expected, rtol=1e-12,
                               atol=1e-12)  # fmt: skip
    # … while the model's own kernel does change there
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for p, d in zip(_trainable(moved).values(), _random_delta(model, 0.5, seed=9), strict=True):
            p.add_(d)
    assert float((nk.empirical_ntk(moved, x, output="full") - expected).abs().max()) > 1e-3


def test_linearized_gradient_is_the_jacobian_at_theta0_anywhere():
    model, x = _torch_net(), _x()
    lin = _set(nk.linearize(model), model, _random_delta(model, 0.4, seed=10))
    w = torch.randn(N, 3, dtype=DT, generator=torch.Generator().manual_seed(11))
    (lin(x) * w).sum().backward()
    grad = torch.cat([p.grad.reshape(-1) for p in lin.theta])
    torch.testing.assert_close(grad, _jacobian(model, x).T @ w.reshape(-1), rtol=1e-11, atol=1e-12)


def test_state_theta0_frozen_copy_and_displacement():
    model, x = _torch_net(), _x()
    with torch.no_grad():
        f0 = model(x)
    lin = nk.linearize(model)
    assert [p.shape for p in lin.theta] == [p.shape for p in model.parameters()]
    assert all(p.requires_grad for p in lin.theta)
    trainable = [p for p in lin.parameters() if p.requires_grad]
    assert len(trainable) == len(list(model.parameters()))  # only θ trains; the frozen copy does not
    opt = torch.optim.SGD(lin.theta.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        (lin(x) ** 2).sum().backward()
        opt.step()
    for p0, p, th, d in zip(lin.theta0(), model.parameters(), lin.theta, lin.displacement(), strict=True):
        torch.testing.assert_close(p0, p.detach(), rtol=0, atol=0)  # θ0 stays θ0
        torch.testing.assert_close(d, th.detach() - p0, rtol=0, atol=0)
    assert any(float(d.abs().max()) > 0 for d in lin.displacement())
    # editing the original model afterwards does not leak into the Taylor model
    before = lin(x).detach()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    torch.testing.assert_close(lin(x).detach(), before, rtol=0, atol=0)
    assert not torch.allclose(model(x), f0)


def test_frozen_parameters_are_not_expanded():
    model, x = _torch_net(), _x()
    model[0].requires_grad_(False)  # the first layer is fixed
    lin = nk.linearize(model)
    assert [p.shape for p in lin.theta] == [p.shape for p in model.parameters() if p.requires_grad]
    delta = _random_delta(model, 0.3, seed=12)
    expected = model(x).detach() + (_jacobian(model, x) @ torch.cat([d.reshape(-1) for d in delta])).reshape(N, 3)
    with torch.no_grad():
        torch.testing.assert_close(_set(lin, model, delta)(x), expected, rtol=1e-11, atol=1e-12)


def test_errors():
    model = _torch_net()
    for degree in (0, -1):
        with pytest.raises(ValueError, match="degree"):
            nk.taylor_expand(model, degree=degree)
    for degree in (1.5, True, "2"):  # wrong types
        with pytest.raises(TypeError, match="degree"):
            nk.taylor_expand(model, degree=degree)
    with pytest.raises(TypeError, match="nn.Module"):
        nk.linearize(lambda x: x)
    frozen = copy.deepcopy(model).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        nk.linearize(frozen)
