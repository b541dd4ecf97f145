r"""The page's code section: the classic NTK example, run by ntkit exactly as the lesson states it.

A two-layer ReLU network without bias,

    f(x) = v · relu(w x) / √m,    m = 128,    w, v ~ N(0, 1) (seed 0),

has the empirical NTK Θ(x, x') = ∇_θ f(x) · ∇_θ f(x') (Jacot, Gabriel & Hongler, 2018). Kernel ridge regression
with it on 40 evenly spaced points of y = sin(3x) in [−1, 1],

    f̂(x) = Θ(x, X) (Θ(X, X) + λI)⁻¹ y,    λ = 10⁻³,

gives a test MSE, mean (f̂ − y)², of 0.169 on 200 evenly spaced points. It is that poor because without a bias
every feature is positively homogeneous in x: relu(w·cx) = c·relu(w x) for c > 0, so Θ(x, x') = x x' Θ(sign x,
sign x') and the regression can only fit one straight line on each side of 0. A 1-D input has just two angles.
With a bias, b ~ N(0, 1) drawn after w and v, the kinks −b/w spread over the interval and the test MSE drops by
more than two orders of magnitude.

:func:`seed_example` is the code the page shows (its source is sent with its result).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch


class TwoLayerReLU(torch.nn.Module):
    """f(x) = v · relu(w x + b) / √m, with w, v (and b) ~ N(0, 1) drawn from ``seed``; ``bias=False`` drops b."""

    def __init__(self, m: int = 128, bias: bool = False, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.m = m
        self.w = torch.nn.Parameter(torch.randn(m, generator=g, dtype=torch.float64))
        self.v = torch.nn.Parameter(torch.randn(m, generator=g, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.randn(m, generator=g, dtype=torch.float64)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, 1)
        z = x * self.w if self.b is None else x * self.w + self.b  # (N, m)
        return torch.relu(z) @ self.v.unsqueeze(1) / self.m**0.5  # (N, 1)


def seed_example(bias: bool = False) -> float:
    """Test MSE of kernel ridge regression (λ = 1e-3) with the empirical NTK of :class:`TwoLayerReLU`."""
    import ntkit
    from ntkit.predict import gp_inference

    net = TwoLayerReLU(m=128, bias=bias, seed=0)
    x_train = torch.linspace(-1, 1, 40, dtype=torch.float64).unsqueeze(1)  # 40 points in [-1, 1]
    x_test = torch.linspace(-1, 1, 200, dtype=torch.float64).unsqueeze(1)  # 200 test points
    y_train, y_test = torch.sin(3 * x_train), torch.sin(3 * x_test)

    theta = ntkit.empirical_ntk(net, x_train)  # Θ(X, X), (40, 40)
    theta_test = ntkit.empirical_ntk(net, x_test, x_train)  # Θ(x, X), (200, 40)
    predict = gp_inference(theta, y_train, diag_reg=1e-3, diag_reg_absolute_scale=True)  # Θ(x,X)(Θ + λI)⁻¹y
    f_test = predict(theta_test).mean
    return float(((f_test - y_test) ** 2).mean())


@functools.lru_cache(maxsize=1)
def seed_example_report() -> dict[str, Any]:
    """What the page's code section shows: the source of :func:`seed_example` and its two results.

    Returns
    -------
    dict
        ``source`` (the code of :class:`TwoLayerReLU` and :func:`seed_example`, as text), ``mse_no_bias`` and
        ``mse_bias`` (floats), and ``ratio`` (their quotient).
    """
    no_bias, with_bias = seed_example(bias=False), seed_example(bias=True)
    source = inspect.getsource(TwoLayerReLU) + "\n\n" + inspect.getsource(seed_example)
    return {"source": source, "mse_no_bias": no_bias, "mse_bias": with_bias,
            "ratio": no_bias / with_bias}  # fmt: skip
