"""The generated tasks: shapes, labels, geometry (checked without noise against the defining formulas), seeds."""

import math

import pytest
import torch

from ntkit.data import digits, sin_regression, two_circles, two_spirals


def test_sin_regression_is_stratified_and_exact():
    x, y, xt, yt = sin_regression(n_train=10, n_test=5, seed=3)
    bins = torch.floor((x[:, 0] + 1) / 0.2)
    assert torch.equal(bins, torch.arange(10, dtype=x.dtype))  # one training point per bin of [−1, 1]
    torch.testing.assert_close(y, torch.sin(3 * x), rtol=0, atol=0)
    torch.testing.assert_close(xt[:, 0], torch.linspace(-1, 1, 5, dtype=x.dtype))


def test_two_spirals_lie_on_their_arms():
    x, y = two_spirals(50, turns=1.5, noise=0.0, r_min=0.1, seed=1)
    assert x.shape == (100, 2) and torch.equal(y[:50], torch.ones(50, 1, dtype=x.dtype))
    assert torch.equal(y[50:], -torch.ones(50, 1, dtype=x.dtype))
    r = x.norm(dim=1)
    assert float(r.min()) >= 0.1 - 1e-12 and float(r.max()) <= 1 + 1e-12
    angle = torch.atan2(x[:50, 1], x[:50, 0])
    expected = 2 * math.pi * 1.5 * r[:50]
    assert torch.allclose(torch.remainder(angle - expected + math.pi, 2 * math.pi), torch.full_like(angle, math.pi))
    torch.testing.assert_close(x[50:], -x[:50])  # the second arm is the first rotated by π


def test_two_circles_radii_and_seeds():
    x, y = two_circles(40, radii=(0.4, 1.0), noise=0.0, seed=2)
    torch.testing.assert_close(x[:40].norm(dim=1), torch.full((40,), 0.4, dtype=x.dtype))
    torch.testing.assert_close(x[40:].norm(dim=1), torch.ones(40, dtype=x.dtype))
    assert torch.equal(two_circles(40, seed=2)[0], two_circles(40, seed=2)[0])
    assert not torch.equal(two_circles(40, seed=2)[0], two_circles(40, seed=3)[0])
    g = torch.Generator().manual_seed(0)
    first, second = two_spirals(5, seed=g)[0], two_spirals(5, seed=g)[0]
    assert not torch.equal(first, second)  # one generator, two different draws


def test_digits_ship_with_scikit_learn():
    images, labels = digits()
    assert images.shape == (1797, 1, 8, 8) and labels.shape == (1797,)
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    assert set(labels.tolist()) == set(range(10))


@pytest.mark.parametrize("make", [two_spirals, two_circles])
def test_bad_size(make):
    with pytest.raises(ValueError, match="n_per_class must be a positive int"):
        make(0)
