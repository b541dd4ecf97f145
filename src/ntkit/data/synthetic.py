"""Small synthetic tasks generated from a seed."""

from __future__ import annotations

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
