"""Small tasks generated from a seed, and the digits that ship with scikit-learn."""

from __future__ import annotations

import math

import torch


def sin_regression(
    n_train: int = 40,
    n_test: int = 200,
    frequency: float = 3.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The classic 1-D NTK regression task, y = sin(frequency·x) on [−1, 1].

    Training inputs are stratified: one uniform draw (from ``seed``) in each of ``n_train`` equal bins, so the
    whole interval is covered and the test error measures interpolation. Test inputs are an even grid, so curves
    plot directly. Returns ``x_train (n_train, 1), y_train (n_train, 1), x_test (n_test, 1), y_test (n_test, 1)``.
    """
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be positive; got {n_train} and {n_test}")
    generator = torch.Generator().manual_seed(seed)
    bins = torch.arange(n_train, dtype=dtype).unsqueeze(1)
    x_train = (bins + torch.rand(n_train, 1, generator=generator, dtype=dtype)) * (2 / n_train) - 1
    x_test = torch.linspace(-1, 1, n_test, dtype=dtype).unsqueeze(1)
    return x_train, torch.sin(frequency * x_train), x_test, torch.sin(frequency * x_test)


def two_spirals(
    n_per_class: int,
    turns: float = 1.5,
    noise: float = 0.05,
    r_min: float = 0.1,
    seed: int | torch.Generator = 0,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved spirals in the plane (Lang & Witbrock 1988), a binary task no linear model solves.

    Arm points are r·(cos 2π·turns·r, sin 2π·turns·r) for r uniform in [``r_min``, 1]; the second arm is the first
    rotated by π; Gaussian noise of std ``noise`` is added. ``seed`` is an int or a ``torch.Generator`` (to draw
    several sets from one stream). Returns x (2n, 2) and labels (2n, 1) in {+1, −1}, +1 first.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive int; got {n_per_class!r}")
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    r = r_min + (1 - r_min) * torch.rand(n_per_class, generator=g, dtype=dtype)
    angle = 2 * math.pi * turns * r
    arm = torch.stack([r * torch.cos(angle), r * torch.sin(angle)], 1)
    x = torch.cat([arm, -arm]) + noise * torch.randn(2 * n_per_class, 2, generator=g, dtype=dtype)
    return x, _plus_minus_labels(n_per_class, dtype)


def two_circles(
    n_per_class: int,
    radii: tuple[float, float] = (0.4, 1.0),
    noise: float = 0.05,
    seed: int | torch.Generator = 0,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two concentric noisy circles: label +1 on the inner radius, −1 on the outer; angles uniform.

    Returns x (2n, 2) and labels (2n, 1) in {+1, −1}, +1 first. ``seed`` as in :func:`two_spirals`.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive int; got {n_per_class!r}")
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    angle = 2 * math.pi * torch.rand(2 * n_per_class, generator=g, dtype=dtype)
    radius = torch.tensor(radii, dtype=dtype).repeat_interleave(n_per_class)
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1)
    x = x + noise * torch.randn(2 * n_per_class, 2, generator=g, dtype=dtype)
    return x, _plus_minus_labels(n_per_class, dtype)


def _plus_minus_labels(n_per_class: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.cat([torch.ones(n_per_class, 1, dtype=dtype), -torch.ones(n_per_class, 1, dtype=dtype)])


def digits(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8×8 handwritten digits (1,797 images that ship with the package; nothing is downloaded).

    Returns images (N, 1, 8, 8) scaled to [0, 1] and integer labels (N,) in 0…9.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    return torch.as_tensor(data.images, dtype=dtype).unsqueeze(1) / 16.0, torch.as_tensor(data.target)
