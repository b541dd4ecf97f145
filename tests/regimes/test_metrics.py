"""The kernel metrics against their definitions written out with numpy (explicit centering matrix H)."""

import numpy as np
import pytest
import torch

from ntkit import regimes


def _random_kernel(n, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 3 * n, generator=g, dtype=torch.float64)
    return a @ a.T


def test_relative_change_and_distance_match_numpy():
    k0, kt = _random_kernel(7, 0), _random_kernel(7, 1)
    a, b = k0.numpy(), kt.numpy()
    assert regimes.relative_change(k0, kt) == pytest.approx(np.linalg.norm(b - a) / np.linalg.norm(a), rel=1e-12)
    cos = np.trace(a.T @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
    assert regimes.kernel_distance(k0, kt) == pytest.approx(1 - cos, rel=1e-12)


def test_distance_ignores_scale_and_change_does_not():
    k0 = _random_kernel(5, 2)
    assert regimes.kernel_distance(k0, 3.0 * k0) == pytest.approx(0.0, abs=1e-14)
    assert regimes.relative_change(k0, 3.0 * k0) == pytest.approx(2.0, rel=1e-14)


@pytest.mark.parametrize("outputs", [None, 1, 3])
def test_centered_alignment_matches_explicit_centering(outputs):
    n = 9
    k = _random_kernel(n, 3)
    g = torch.Generator().manual_seed(4)
    y = torch.randn(n, generator=g, dtype=torch.float64) if outputs is None else \
        torch.randn(n, outputs, generator=g, dtype=torch.float64)  # fmt: skip
    yy = y.numpy().reshape(n, -1)
    h = np.eye(n) - np.ones((n, n)) / n
    kc, lc = h @ k.numpy() @ h, h @ (yy @ yy.T) @ h
    expected = np.sum(kc * lc) / (np.linalg.norm(kc) * np.linalg.norm(lc))
    assert regimes.centered_alignment(k, y) == pytest.approx(expected, rel=1e-12)


def test_alignment_ignores_offsets_and_reaches_one():
    y = torch.tensor([[1.0], [-2.0], [0.5], [3.0]], dtype=torch.float64)
    assert regimes.centered_alignment(y @ y.T + 7.0, y + 4.0) == pytest.approx(1.0, abs=1e-12)


def test_bad_kernels():
    k = torch.eye(3)
    with pytest.raises(ValueError, match=r"kt must have the shape of k0, \(3, 3\); got \(2, 2\)"):
        regimes.relative_change(k, torch.eye(2))
    with pytest.raises(ValueError, match="k0 is zero"):
        regimes.kernel_distance(torch.zeros(3, 3), k)
    with pytest.raises(TypeError, match="k0 must be a floating-point torch.Tensor"):
        regimes.relative_change(np.eye(3), k)
    with pytest.raises(ValueError, match=r"y must have one row per kernel row \(3\); got shape \(4,\)"):
        regimes.centered_alignment(k, torch.ones(4))
    with pytest.raises(ValueError, match="centered targets are zero"):
        regimes.centered_alignment(k, torch.ones(3))
