"""The demo's three tasks, generated from a seed: sin(3x) on 40 points, and two 2-D binary classifications.

The classifications are trained as regressions on ±1 labels with the same squared loss, so that gradient descent
stays linear in function space and the closed-form NTK prediction applies unchanged; accuracy is the sign.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ntkit.data import sin_regression, two_circles, two_spirals

#: Points per side of the evaluation grid drawn under the 2-D tasks.
GRID_SIZE = 32
#: Half-width of the square [−L, L]² the 2-D grid covers.
GRID_LIMIT = 1.5


@dataclass
class Task:
    """Training and test sets, the points the page plots, and a line along which Θ(x₀, ·) is sliced.

    ``x_plot`` are extra inputs at which the function is drawn: the test grid itself for the 1-D task (then
    ``x_plot`` is ``x_test``), a ``GRID_SIZE × GRID_SIZE`` grid for the 2-D ones. ``x_slice`` are points on a line
    through ``x0``, and ``slice_coord`` their coordinate along it.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_plot: torch.Tensor
    x0: torch.Tensor
    x_slice: torch.Tensor
    slice_coord: torch.Tensor
    slice_label: str

    @property
    def dims(self) -> int:
        return self.x_train.shape[1]


def make_task(name: str, seed: int = 0, dtype: torch.dtype = torch.float64) -> Task:
    """The task ``name`` ("sin", "spirals" or "circles") drawn from ``seed``.

    * ``sin``: :func:`ntkit.data.sin_regression`, y = sin(3x) on 40 stratified points of [−1, 1], tested on an even
      grid of 200; Θ(x₀, ·) is sliced at x₀ = 0 over that grid.
    * ``spirals`` / ``circles``: 64 training and 256 test points with labels ±1; the function is drawn on a
      32 × 32 grid of [−1.5, 1.5]², and Θ(x₀, ·) is sliced along the horizontal line through x₀ = (0.5, 0).
    """
    if name == "sin":
        x_train, y_train, x_test, y_test = sin_regression(seed=seed, dtype=dtype)
        x0 = torch.zeros(1, 1, dtype=dtype)
        return Task(name, x_train, y_train, x_test, y_test, x_test, x0, x_test, x_test[:, 0], "x")
    # One turn per arm and little noise: a task that a few hundred steps can fit at the demo's widths.
    makers = {
        "spirals": lambda n, g: two_spirals(n, turns=1.0, noise=0.03, r_min=0.15, seed=g, dtype=dtype),
        "circles": lambda n, g: two_circles(n, noise=0.05, seed=g, dtype=dtype),
    }
    if name not in makers:
        raise ValueError(f"task must be one of sin, spirals, circles; got {name!r}")
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train = makers[name](32, generator)
    x_test, y_test = makers[name](128, generator)
    axis = torch.linspace(-GRID_LIMIT, GRID_LIMIT, GRID_SIZE, dtype=dtype)
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")  # row-major: x_plot[i·G + j] = (axis[j], axis[i])
    x_plot = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    x0 = torch.tensor([[0.5, 0.0]], dtype=dtype)
    coord = torch.linspace(-GRID_LIMIT, GRID_LIMIT, 121, dtype=dtype)
    x_slice = torch.stack([coord, torch.zeros_like(coord)], 1)
    return Task(name, x_train, y_train, x_test, y_test, x_plot, x0, x_slice, coord, "x₁ (on the line x₂ = 0)")
