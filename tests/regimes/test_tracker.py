"""KernelTracker's numbers against a direct recomputation: a brute-force Jacobian NTK, the metrics written out
with numpy, pre-activations computed by hand, and a linear model trained by hand in flattened parameter space."""

import math

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev

from ntkit import regimes

G = torch.Generator().manual_seed(0)
X = torch.randn(7, 2, generator=G, dtype=torch.float64)
Y = torch.randn(7, 2, generator=G, dtype=torch.float64)
LR, STEPS = 0.5, 6


def mse(f, y):
    return 0.5 * ((f - y) ** 2).mean()


def brute_ntk(model, x):
    """Θ = Σ_o J_o J_oᵀ / O from the full Jacobian with respect to every trainable parameter."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)
    j = torch.cat([v.reshape(x.shape[0], -1, v[0, 0].numel()) for v in jac.values()], dim=2)  # (N, O, P)
    return torch.einsum("aop,bop->ab", j, j) / j.shape[1]


def pre_activations(model, x):
    """The inputs of the two ReLUs of a depth-2 ``regimes.mlp``, from the stored weights and multipliers."""
    out = []
    h = x
    for layer in (model[0], model[2]):
        z = h @ (layer.weight * layer.weight_multiplier).T + layer.bias * layer.bias_multiplier
        out.append(z.detach())
        h = torch.relu(z)
    return out


@pytest.fixture(scope="module")
def run():
    model = regimes.mlp(2, 12, 2, depth=2, seed=3, b_std=0.5, dtype=torch.float64)
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    f0 = model(X).detach()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    tracker = regimes.KernelTracker(model, X, every=[2, STEPS], y_probe=Y, loss_fn=mse, optimizer=opt)
    k0 = brute_ntk(model, X)
    pre0 = pre_activations(model, X)
    # the linear model by hand: f_lin = f0 + J0 (θ − θ0), gradient descent on the flattened θ
    params0 = {n: p.detach() for n, p in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, p, (X,)))(params0)
    j0 = torch.cat([v.reshape(X.shape[0] * 2, -1) for v in jac.values()], dim=1)  # (N·O, P)
    delta = torch.zeros(j0.shape[1], dtype=torch.float64)
    for _ in range(STEPS):
        loss = mse(model(X), Y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tracker.step(X, Y)
        residual = (f0.reshape(-1) + j0 @ delta - Y.reshape(-1)) / Y.numel()
        delta = delta - LR * j0.T @ residual
    f_lin = (f0.reshape(-1) + j0 @ delta).reshape(f0.shape)
    return {"model": model, "tracker": tracker, "k0": k0, "pre0": pre0, "theta0": theta0, "f_lin": f_lin, "f0": f0}


def test_records_at_the_chosen_steps(run):
    assert [r["step"] for r in run["tracker"].records] == [0, 2, STEPS]
    assert set(run["tracker"].kernels) == {0, 2, STEPS}


def test_kernel_numbers_match_a_direct_recomputation(run):
    model, rec = run["model"], run["tracker"].records[-1]
    k0, kt = run["k0"].numpy(), brute_ntk(model, X).numpy()
    np.testing.assert_allclose(run["tracker"].kernel0.numpy(), k0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(run["tracker"].kernels[STEPS].numpy(), kt, rtol=1e-10, atol=1e-12)
    assert rec["kernel_change"] == pytest.approx(np.linalg.norm(kt - k0) / np.linalg.norm(k0), rel=1e-9)
    cos = np.sum(k0 * kt) / (np.linalg.norm(k0) * np.linalg.norm(kt))
    assert rec["kernel_distance"] == pytest.approx(1 - cos, rel=1e-6, abs=1e-12)
    h = np.eye(len(X)) - 1 / len(X)
    kc, yc = h @ kt @ h, h @ (Y.numpy() @ Y.numpy().T) @ h
    assert rec["kernel_alignment"] == pytest.approx(np.sum(kc * yc) / np.linalg.norm(kc) / np.linalg.norm(yc),
                                                    rel=1e-9)  # fmt: skip
    assert rec["kernel_change"] > 1e-4  # the kernel did move: the comparison is not 0 = 0


def test_weight_changes_match(run):
    model, theta0, rec = run["model"], run["theta0"], run["tracker"].records[-1]
    params = {n: p.detach() for n, p in model.named_parameters()}
    for layer in ("0", "2", "4"):
        names = [f"{layer}.weight", f"{layer}.bias"]
        num = sum(float(((params[n] - theta0[n]) ** 2).sum()) for n in names)
        den = sum(float((theta0[n] ** 2).sum()) for n in names)
        assert rec[f"weight_change:{layer}"] == pytest.approx(math.sqrt(num / den), rel=1e-10)
    total = math.sqrt(sum(float(((params[n] - theta0[n]) ** 2).sum()) for n in params)
                      / sum(float((p ** 2).sum()) for p in theta0.values()))  # fmt: skip
    assert rec["weight_change"] == pytest.approx(total, rel=1e-10) and total > 0


def test_relu_flips_match(run):
    now = pre_activations(run["model"], X)
    flipped = sum(int(((a > 0) != (b > 0)).sum()) for a, b in zip(now, run["pre0"], strict=True))
    total = sum(a.numel() for a in now)
    assert run["tracker"].records[-1]["relu_flips"] == pytest.approx(flipped / total, abs=0)
    assert run["tracker"].records[0]["relu_flips"] == 0.0


def test_linear_gap_matches_a_hand_trained_linear_model(run):
    with torch.no_grad():
        f = run["model"](X)
    gap = float((f - run["f_lin"]).norm())
    rec = run["tracker"].records[-1]
    assert rec["linear_gap"] == pytest.approx(gap / math.sqrt(f.numel()), rel=1e-8)
    assert rec["linear_gap_rel"] == pytest.approx(gap / float((run["f_lin"] - run["f0"]).norm()), rel=1e-8)
    assert rec["probe_loss"] == pytest.approx(float(((f - Y) ** 2).mean()), rel=1e-12)


def test_table_and_plot(run, tmp_path):
    pd = pytest.importorskip("pandas")
    frame = run["tracker"].to_pandas()
    assert isinstance(frame, pd.DataFrame) and list(frame["step"]) == [0, 2, STEPS]
    assert {"kernel_change", "kernel_distance", "relu_flips", "linear_gap", "weight_change:0"} <= set(frame.columns)
    path = tmp_path / "tracker.png"
    run["tracker"].plot(path)
    assert path.stat().st_size > 10_000


def test_every_n_steps_without_linearization():
    model = regimes.mlp(1, 8, 1, dtype=torch.float64)
    x = torch.linspace(-1, 1, 4, dtype=torch.float64)[:, None]
    tracker = regimes.KernelTracker(model, x, every=3)
    recs = [tracker.step() for _ in range(7)]
    assert [r is not None for r in recs] == [False, False, True, False, False, True, False]
    assert math.isnan(tracker.records[-1]["linear_gap"]) and math.isnan(tracker.records[-1]["kernel_alignment"])


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda m: regimes.KernelTracker(m, torch.randn(4, 5, dtype=torch.float64)), ValueError,
         r"x_probe of shape \(4, 5\) does not fit the model"),
        (lambda m: regimes.KernelTracker(m, torch.randn(4, 3)), ValueError,
         r"x_probe must have the model's dtype and device \(torch.float64, cpu\); got torch.float32"),
        (lambda m: regimes.KernelTracker(m, torch.ones(4, 3, dtype=torch.long)), TypeError,
         r"x_probe must be a floating-point torch.Tensor; got torch.int64"),
        (lambda m: regimes.KernelTracker(m, torch.randn(1, 3, dtype=torch.float64)), ValueError,
         r"x_probe must be \(N, ...\) with N ≥ 2 examples; got shape \(1, 3\)"),
        (lambda m: regimes.KernelTracker(m, torch.randn(4, 3, dtype=torch.float64), every=0), ValueError,
         r"every must be an int ≥ 1 or an iterable of steps ≥ 0; got 0"),
        (lambda m: regimes.KernelTracker(m, torch.randn(4, 3, dtype=torch.float64), y_probe=torch.ones(5)),
         ValueError, r"y_probe must have one row per probe example \(4\); got shape \(5,\)"),
        (lambda m: regimes.KernelTracker(m, torch.randn(4, 3, dtype=torch.float64), loss_fn=mse), ValueError,
         r"give both loss_fn and optimizer"),
    ],
)  # fmt: skip
def test_bad_input(make, error, message):
    model = regimes.mlp(3, 8, 1, dtype=torch.float64)
    with pytest.raises(error, match=message):
        make(model)


def test_step_needs_the_batch_when_the_linearization_trains():
    model = regimes.mlp(3, 8, 1, dtype=torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64)
    tracker = regimes.KernelTracker(model, x, loss_fn=mse, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match=r"step\(x, y\) needs the batch"):
        tracker.step()


def test_the_run_is_not_trivial(run):
    """Every compared number is away from its value at initialisation, so agreement is not 0 = 0."""
    rec = run["tracker"].records[-1]
    assert rec["relu_flips"] > 0 and rec["linear_gap"] > 1e-6 and rec["kernel_distance"] > 1e-8


def test_constant_targets_leave_the_alignment_undefined():
    model = regimes.mlp(3, 8, 1, dtype=torch.float64)
    tracker = regimes.KernelTracker(model, torch.randn(4, 3, dtype=torch.float64), y_probe=torch.ones(4, 1))
    assert math.isnan(tracker.records[0]["kernel_alignment"]) and tracker.records[0]["probe_loss"] >= 0


def test_relu_flips_of_a_lazy_model_count_only_the_trained_copy():
    """The frozen reference inside lazy() never flips; counting it would halve the fraction."""
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.sin(x[:, :1])
    model = regimes.lazy(regimes.mlp(2, 16, 1, seed=2, dtype=torch.float64), 1.0)
    pre0 = (x @ (model.model[0].weight * model.model[0].weight_multiplier).T + model.model[0].bias
            * model.model[0].bias_multiplier).detach()  # fmt: skip
    tracker = regimes.KernelTracker(model, x, every=[4])
    opt = torch.optim.SGD(model.parameters(), lr=2.0)
    for _ in range(4):
        loss = mse(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tracker.step()
    pre = (x @ (model.model[0].weight * model.model[0].weight_multiplier).T + model.model[0].bias
           * model.model[0].bias_multiplier).detach()  # fmt: skip
    expected = float(((pre > 0) != (pre0 > 0)).double().mean())
    assert expected > 0 and tracker.records[-1]["relu_flips"] == pytest.approx(expected, abs=0)
