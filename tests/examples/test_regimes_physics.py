"""The physics at small sizes: lazy under the NTK parameterization, feature learning under μP, 1/α under the
Chizat–Bach rescaling. Every tolerance is stated with the noise or the correction term it allows for."""

import math

import numpy as np
import pytest
import torch

from ntkit import empirical_ntk, regimes
from ntkit.data.tasks import load_task
from ntkit.examples.regimes_sweep import base_learning_rate, train_one

TASK = load_task("sin", n_train=16)
LR = base_learning_rate(TASK, 1, 0.5)
STEPS = 100
WIDTHS = (64, 128, 256, 512, 1024, 2048)
SEEDS = 6


def kernel_change(width, parameterization, seed):
    return train_one(TASK, width, parameterization, 1.0, seed, LR, STEPS, n_probe=16)["row"]["kernel_change"]


@pytest.fixture(scope="module")
def ntk_changes():
    return np.array([[kernel_change(w, "ntk", s) for w in WIDTHS] for s in range(SEEDS)])


def test_ntk_parameterization_kernel_change_falls_like_one_over_root_width(ntk_changes):
    """Lee et al. 2019 (fig. 1): ‖Θ_T − Θ_0‖/‖Θ_0‖ ∝ n^{-1/2}. One slope per seed; the mean must lie within
    3 standard errors of −1/2, plus 0.1 for the O(1/n) term that steepens it at these widths."""
    slopes = np.array([np.polyfit(np.log(WIDTHS), np.log(c), 1)[0] for c in ntk_changes])
    se = slopes.std(ddof=1) / math.sqrt(SEEDS)
    assert se < 0.1, f"seed-to-seed noise too large to test the slope: standard error {se:.3f}"
    assert abs(slopes.mean() + 0.5) < 3 * se + 0.1, f"slope {slopes.mean():.3f} ± {se:.3f}"
    # several times smaller at 2048 than at 64: √32 ≈ 5.7 expected; 3 allows for the noise of 6 seeds
    ratio = math.exp(np.log(ntk_changes[:, 0]).mean() - np.log(ntk_changes[:, -1]).mean())
    assert ratio > 3, f"kernel change only {ratio:.2f}× smaller at width 2048 than at 64"


def test_mup_kernel_change_does_not_vanish_with_width(ntk_changes):
    """Yang & Hu 2021: under μP the kernel moves by Θ(1) at any width."""
    mup = np.array([[kernel_change(w, "mup", s) for w in (64, 2048)] for s in range(3)])
    narrow, wide = mup[:, 0].mean(), mup[:, 1].mean()
    assert wide > 0.1, f"μP kernel change at width 2048 is only {wide:.3g}"
    assert wide > 0.5 * narrow, f"μP kernel change fell from {narrow:.3g} to {wide:.3g}"
    slope = math.log(wide / narrow) / math.log(2048 / 64)
    assert slope > -0.15, f"μP kernel change ∝ width^{slope:.2f}"
    assert wide > 10 * ntk_changes[:, -1].mean()  # and far from the NTK parameterization's at the same width


def lazy_kernel_change(alpha, seed=0, width=256, steps=60):
    model = regimes.lazy(regimes.mlp(1, width, 1, activation="erf", b_std=1.0, seed=seed, dtype=torch.float64),
                         alpha)  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    k0 = empirical_ntk(model, TASK.x_train)
    for _ in range(steps):
        loss = 0.5 * ((model(TASK.x_train) - TASK.y_train) ** 2).mean() * model.loss_scale
        opt.zero_grad()
        loss.backward()
        opt.step()
    return regimes.relative_change(k0, empirical_ntk(model, TASK.x_train))


def test_large_alpha_kernel_change_shrinks_like_one_over_alpha():
    """Chizat, Oyallon & Bach 2019: the parameters move by O(1/α), so does the kernel: c(α) = c₁/α + O(1/α²).
    The ratio c(10α)/c(α) is 1/10 up to a relative O(1/α) correction (erf, so the kernel is smooth in θ;
    ReLU kernels jump when an activation pattern flips)."""
    c = {a: lazy_kernel_change(a) for a in (10.0, 100.0, 1000.0)}
    assert c[100.0] / c[10.0] == pytest.approx(0.1, rel=0.15)
    assert c[1000.0] / c[100.0] == pytest.approx(0.1, rel=0.02)
    assert c[10.0] > 1e-4
