"""The one learning-rate rule and the one slope fitter that every study shares."""

import numpy as np
import pytest
import torch

from ntkit import Linear, ReLU, Sequential
from ntkit.data.tasks import load_task
from ntkit.examples.common import log_log_slope, stable_learning_rate


def test_stable_learning_rate_is_the_fraction_of_two_s_over_lambda_max():
    """η = fraction · 2·N·O/λ_max, with λ_max from numpy's own symmetric eigensolver (float64: agreement to
    rounding, relative 1e-12)."""
    task = load_task("sin")
    spec = Sequential(Linear(64, b_std=1), ReLU(), Linear(1))
    k = spec.kernel(task.x_train).ntk
    expected = 0.3 * 2 * task.y_train.numel() / np.linalg.eigvalsh(k.numpy()).max()
    assert stable_learning_rate(spec, task, 0.3) == pytest.approx(expected, rel=1e-12)
    assert stable_learning_rate(k, task, 0.3) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("fraction", "error", "message"),
    [(0.0, ValueError, "fraction must be > 0"), (-0.5, ValueError, "fraction must be > 0"),
     (float("nan"), ValueError, "fraction must be finite"), (1.5, ValueError, r"fraction \(of the largest stable "
     r"learning rate\) must be ≤ 1; got 1.5"), (True, TypeError, "fraction must be a real number")],
)  # fmt: skip
def test_stable_learning_rate_refuses_fractions_outside_zero_one(fraction, error, message):
    with pytest.raises(error, match=message):
        stable_learning_rate(torch.eye(3, dtype=torch.float64), load_task("sin", n_train=3), fraction)


def test_log_log_slope_of_a_power_law_with_noise_free_data():
    x = [2.0, 8.0, 32.0, 128.0]
    assert log_log_slope(x, [5 * v**-1.25 for v in x]) == pytest.approx(-1.25, abs=1e-12)
