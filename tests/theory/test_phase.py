"""Phase diagram against closed forms (ReLU), an independent quadrature (tanh), the spec's own NTK on a
dataset, and trained deep networks."""

import math

import numpy as np
import pytest
import torch

import ntkit as nk
from ntkit.predict.gradient_flow import max_learning_rate
from ntkit.regimes import mlp
from ntkit.theory import max_trainable_depth, phase_diagram
from ntkit.theory.phase import ntk_condition_numbers

NODES, WEIGHTS = np.polynomial.hermite_e.hermegauss(200)
WEIGHTS = WEIGHTS / WEIGHTS.sum()


def test_relu_closed_forms():
    # E[relu(√q z)²] = q/2 and E[relu'(z)²] = 1/2: q* = σb²/(1 − σw²/2), χ1 = σw²/2, ordered (c* = 1) for σw² < 2
    w, b = np.array([0.6, 1.0, 1.3]), np.array([0.1, 0.5])
    pd = phase_diagram("relu", w, b, depth=3)
    w2, b2 = (w**2)[:, None], (b**2)[None, :]
    np.testing.assert_allclose(pd.q_star, b2 / (1 - w2 / 2), rtol=1e-14)
    np.testing.assert_allclose(pd.chi1, np.broadcast_to(w2 / 2, pd.chi1.shape), rtol=1e-14)
    np.testing.assert_array_equal(pd.c_star, 1.0)
    np.testing.assert_allclose(pd.xi, -1 / np.log(np.broadcast_to(w2 / 2, pd.xi.shape)), rtol=1e-13)
    np.testing.assert_allclose(max_trainable_depth("relu", 1.0, 0.1), 6 / math.log(2), rtol=1e-14)
    assert np.isinf(phase_diagram("relu", [1.5], [0.1], depth=1).q_star).all()  # σw² > 2: the variance explodes


def _tanh_reference(w2, b2):
    """q* by fixed-point iteration with 1-D Gauss–Hermite, χ1 = σw² E[sech⁴(√q* z)], and c* by iterating the
    correlation map with a 2-D rule: all written here, independently of ntkit's quadrature."""
    q = 1.0
    for _ in range(5000):
        q = w2 * np.sum(WEIGHTS * np.tanh(np.sqrt(q) * NODES) ** 2) + b2
    chi1 = w2 * np.sum(WEIGHTS / np.cosh(np.sqrt(q) * NODES) ** 4)
    z1, z2 = NODES[:, None], NODES[None, :]
    ww = WEIGHTS[:, None] * WEIGHTS[None, :]
    c = 0.5
    for _ in range(3000):
        u = np.sqrt(q) * z1
        v = np.sqrt(q) * (c * z1 + np.sqrt(1 - c * c) * z2)
        c = (w2 * np.sum(ww * np.tanh(u) * np.tanh(v)) + b2) / q
    return q, chi1, min(c, 1.0)


@pytest.mark.parametrize(("w2", "b2"), [(0.8, 0.05), (1.5, 0.05), (2.5, 0.1)])
def test_tanh_matches_an_independent_quadrature(w2, b2):
    q, chi1, c = _tanh_reference(w2, b2)
    pd = phase_diagram("tanh", [math.sqrt(w2)], [math.sqrt(b2)], depth=1)
    # both rules are converged far below 1e-8 at these variances; iteration and bisection to 1e-12
    assert pd.q_star[0, 0] == pytest.approx(q, rel=1e-8)
    assert pd.chi1[0, 0] == pytest.approx(chi1, rel=1e-8)
    if chi1 > 1:  # chaotic: c* < 1 from the bisection against plain iteration of the map
        assert pd.c_star[0, 0] == pytest.approx(c, abs=1e-8) and c < 1
    else:
        assert pd.c_star[0, 0] == 1.0


def test_ntk_condition_number_matches_the_spec_kernel_on_a_dataset():
    # m inputs in R^d with ⟨x, x⟩/d = 1 and ⟨x, x'⟩/d = c0: x_i = √d (√c0 e_0 + √(1 − c0) e_i)
    m, d, c0, depth = 5, 8, 0.3, 6
    x = torch.zeros(m, d, dtype=torch.float64)
    x[:, 0] = math.sqrt(c0)
    x[torch.arange(m), torch.arange(1, m + 1)] = math.sqrt(1 - c0)
    x *= math.sqrt(d)
    for act, spec_act, w, b in [("relu", nk.ReLU, 1.3, 0.3), ("erf", nk.Erf, 1.8, 0.2)]:
        layers = []
        for _ in range(depth):
            layers += [nk.Linear(16, W_std=w, b_std=b), spec_act()]
        arch = nk.Sequential(*layers, nk.Linear(1, W_std=w, b_std=b))
        evals = torch.linalg.eigvalsh(arch.kernel(x).ntk)
        expected = float(evals.max() / evals.min())
        got = ntk_condition_numbers(
            act, torch.tensor(w * w, dtype=torch.float64), torch.tensor(b * b, dtype=torch.float64), [depth], m, c0
        )
        assert float(got[0]) == pytest.approx(expected, rel=1e-10)


def test_deep_tanh_trains_near_criticality_and_not_deep_in_the_ordered_phase():
    """Trained networks: depth 24 ≫ 6ξ at σw² = 0.4 (ξ ≈ 1.1) but ≪ 6ξ near the boundary σw² = 1.0
    (σb² = 0.01, ξ ≈ 60). Each trains 60 steps at half the largest stable rate of its own infinite-width NTK
    (ntkit.predict.max_learning_rate). The ordered network's inputs have all collapsed to one correlation, so it
    cannot beat the best constant (loss 1 − ȳ²); the near-critical one fits the data."""
    depth, width, steps = 24, 64, 60
    pd = phase_diagram("tanh", [math.sqrt(0.4), 1.0], [0.1], depth=depth)
    assert 6 * pd.xi[0, 0] < depth < 6 * pd.xi[1, 0]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g, dtype=torch.float64)
    y = torch.sign(x[:, :1] * x[:, 1:2])  # ±1 labels, XOR of two coordinates' signs
    constant_loss = float(1 - y.mean() ** 2)
    losses = {}
    for w2 in (0.4, 1.0):
        hidden = [nk.Linear(width, W_std=math.sqrt(w2), b_std=0.1), nk.Tanh(degree=64)] * depth  # ~1e-7 quadrature
        kernel = nk.Sequential(*hidden, nk.Linear(1, W_std=math.sqrt(w2), b_std=0.1)).kernel(x).ntk
        model = mlp(4, width, 1, depth=depth, activation="tanh", W_std=math.sqrt(w2), b_std=0.1, seed=1,
                    dtype=torch.float64)  # fmt: skip
        opt = torch.optim.SGD(model.parameters(), lr=0.5 * max_learning_rate(kernel))
        for _ in range(steps):
            opt.zero_grad()
            loss = 0.5 * ((model(x) - y) ** 2).mean()  # (1/2N)‖f − y‖², max_learning_rate's loss
            loss.backward()
            opt.step()
        with torch.no_grad():
            losses[w2] = float(((model(x) - y) ** 2).mean())
    assert losses[0.4] > 0.9 * constant_loss
    assert losses[1.0] < 0.1 * constant_loss


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("relu", [1.0, 0.0], [0.1]), ValueError, "W_std_grid must hold finite values > 0"),
        (("relu", [1.0], [-0.1]), ValueError, "b_std_grid must hold finite values > 0"),
        (("relu", [1.0], [float("nan")]), ValueError, "b_std_grid"),
        (("relu", [], [0.1]), ValueError, "at least one"),
        (("swish", [1.0], [0.1]), TypeError, "activation"),
    ],
)
def test_bad_grids_are_named(args, error, match):
    with pytest.raises(error, match=match):
        phase_diagram(*args, depth=2)


def test_bad_depth_and_dataset():
    with pytest.raises(ValueError, match="depth"):
        phase_diagram("relu", [1.0], [0.1], depth=0)
    with pytest.raises(ValueError, match="n_samples"):
        phase_diagram("relu", [1.0], [0.1], depth=2, n_samples=1)
    with pytest.raises(ValueError, match="input_correlation"):
        phase_diagram("relu", [1.0], [0.1], depth=2, input_correlation=1.0)
