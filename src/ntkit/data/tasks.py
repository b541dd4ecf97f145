"""Every task of the examples, the regimes sweep and the demo: one :class:`Task`, generated or shipped with a
package, never downloaded.

* :func:`load_task`: the tasks of ``ntkit regimes`` ("sin", "spirals", "digits");
* :func:`digit_value_task`: the digit-value regression of ``ntkit dynamics`` (Lee et al. 2019's setting);
* :func:`interactive_task`: the demo's tasks ("sin", "spirals", "circles"), with the points the page draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ntkit.data.synthetic import digits, sin_regression, two_circles, two_spirals

TASKS = ("sin", "spirals", "digits")
INTERACTIVE_TASKS = ("sin", "spirals", "circles")
#: Points per side of the evaluation grid drawn under the demo's 2-D tasks.
GRID_SIZE = 32
#: Half-width of the square [−L, L]² the 2-D grid covers.
GRID_LIMIT = 1.5


@dataclass
class Task:
    """A regression problem: inputs (N, ...) and targets (N, O), train and test.

    ``classes`` > 0 for tasks whose accuracy counts (argmax of the outputs, or their sign when O = 1). Tasks
    drawn on a page also carry ``x_plot`` (inputs at which the function is drawn), and a line through ``x0``
    along which Θ(x₀, ·) is sliced: its points ``x_slice``, their coordinate ``slice_coord`` and its label.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int = 0
    x_plot: torch.Tensor | None = None
    x0: torch.Tensor | None = None
    x_slice: torch.Tensor | None = None
    slice_coord: torch.Tensor | None = None
    slice_label: str = ""

    @property
    def dims(self) -> int:
        """Input features per example (the last axis of ``x_train``)."""
        return self.x_train.shape[-1]

    def accuracy(self, f: torch.Tensor, y: torch.Tensor) -> float:
        """Fraction of rows whose predicted class (sign or argmax) is the target's."""
        if y.shape[1] == 1:
            return float((torch.sign(f) == torch.sign(y)).double().mean())
        return float((f.argmax(1) == y.argmax(1)).double().mean())


def check_task(name, known: tuple[str, ...] = TASKS) -> str:
    """``name`` if it is one of ``known``; ValueError naming the choices otherwise."""
    if name not in known:
        raise ValueError(f"task must be one of {known}; got {name!r}")
    return name


def load_task(name: str, seed: int = 0, dtype: torch.dtype = torch.float64, n_train: int | None = None) -> Task:
    """A task of ``ntkit regimes``; ``seed`` fixes the sample and the train/test split.

    * ``sin``: 1-D regression y = sin(3x) on [−1, 1] (:func:`ntkit.data.sin_regression`, 20 training points);
    * ``spirals``: 2-D two-spirals classification (Lang & Witbrock 1988), labels ±1 regressed with the MSE;
    * ``digits``: scikit-learn's 8×8 digits, 10 classes as centred one-hot targets regressed with the MSE, as in
      Lee et al. 2019 and Arora et al. 2019 (500 training images, the rest for testing).

    >>> load_task("spirals").x_train.shape
    torch.Size([200, 2])
    """
    check_task(name)
    if name == "sin":
        x, y, xt, yt = sin_regression(n_train or 20, 200, seed=seed, dtype=dtype)
        return Task(name, x, y, xt, yt)
    if name == "spirals":
        n = (n_train or 200) // 2
        x, y = two_spirals(n, seed=seed, dtype=dtype)
        xt, yt = two_spirals(200, seed=seed + 10_000, dtype=dtype)
        return Task(name, x, y, xt, yt, classes=2)
    images, labels = digits(dtype)
    x = images.flatten(1)
    x = (x - x.mean(0)) / (x.std(0) + 1e-3) / math.sqrt(x.shape[1]) * math.sqrt(2.0)  # ‖x‖² ≈ 2 on average
    y = torch.nn.functional.one_hot(labels, 10).to(dtype) - 0.1  # centred one-hot
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n = n_train or 500
    train, test = perm[:n], perm[n:]
    return Task(name, x[train], y[train], x[test], y[test], classes=10)


def digit_value_task(images: bool, dtype: torch.dtype = torch.float64) -> Task:
    """Digit-value regression on scikit-learn's 8×8 digits: the first 64 images train, the next 128 test.

    Inputs are scaled to [−1, 1]: images (N, 1, 8, 8) when ``images`` is True (for a CNN), pixels (N, 64)
    otherwise; targets (N, 1) = digit · 2/9 − 1.
    """
    pictures, labels = digits(dtype)
    x = pictures * 2 - 1
    x = x if images else x.flatten(1)
    y = labels.to(dtype).unsqueeze(1) / 9 * 2 - 1
    return Task("digit-value", x[:64], y[:64], x[64:192], y[64:192])


def interactive_task(name: str, seed: int = 0, dtype: torch.dtype = torch.float64) -> Task:
    """A task of the demo page ("sin", "spirals" or "circles") drawn from ``seed``, with the points it plots.

    * ``sin``: :func:`ntkit.data.sin_regression`, y = sin(3x) on 40 stratified points of [−1, 1], tested on an even
      grid of 200; Θ(x₀, ·) is sliced at x₀ = 0 over that grid (``x_plot`` is ``x_test``).
    * ``spirals`` / ``circles``: 64 training and 256 test points with labels ±1 (trained as a regression, so that
      gradient descent stays linear in function space); the function is drawn on a ``GRID_SIZE × GRID_SIZE`` grid
      of [−1.5, 1.5]², and Θ(x₀, ·) is sliced along the horizontal line through x₀ = (0.5, 0).
    """
    check_task(name, INTERACTIVE_TASKS)
    if name == "sin":
        x_train, y_train, x_test, y_test = sin_regression(seed=seed, dtype=dtype)
        x0 = torch.zeros(1, 1, dtype=dtype)
        return Task(name, x_train, y_train, x_test, y_test, x_plot=x_test, x0=x0, x_slice=x_test,
                    slice_coord=x_test[:, 0], slice_label="x")  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train = _interactive_pairs(name, 32, generator, dtype)
    x_test, y_test = _interactive_pairs(name, 128, generator, dtype)
    axis = torch.linspace(-GRID_LIMIT, GRID_LIMIT, GRID_SIZE, dtype=dtype)
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")  # row-major: x_plot[i·G + j] = (axis[j], axis[i])
    x_plot = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    x0 = torch.tensor([[0.5, 0.0]], dtype=dtype)
    coord = torch.linspace(-GRID_LIMIT, GRID_LIMIT, 121, dtype=dtype)
    x_slice = torch.stack([coord, torch.zeros_like(coord)], 1)
    return Task(name, x_train, y_train, x_test, y_test, classes=2, x_plot=x_plot, x0=x0, x_slice=x_slice,
                slice_coord=coord, slice_label="x₁ (on the line x₂ = 0)")  # fmt: skip


def _interactive_pairs(name: str, n_per_class: int, generator: torch.Generator, dtype: torch.dtype):
    # One turn per arm and little noise: a task that a few hundred steps can fit at the demo's widths.
    if name == "spirals":
        return two_spirals(n_per_class, turns=1.0, noise=0.03, r_min=0.15, seed=generator, dtype=dtype)
    return two_circles(n_per_class, noise=0.05, seed=generator, dtype=dtype)


def sample_interactive(name: str, n: int, generator: torch.Generator,
                       dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """n i.i.d. points (x (n, d), y (n,)) from the distribution of the demo task ``name``: x uniform on [−1, 1]
    with y = sin(3x) for "sin"; for "spirals" and "circles" the generator of :func:`interactive_task`, both
    classes equally likely (used by the demo's learning-curve panel, which needs fresh samples of any size)."""
    check_task(name, INTERACTIVE_TASKS)
    if name == "sin":
        x = 2 * torch.rand(n, 1, generator=generator, dtype=dtype) - 1
        return x, torch.sin(3 * x[:, 0])
    x, y = _interactive_pairs(name, (n + 1) // 2, generator, dtype)
    order = torch.randperm(len(x), generator=generator)[:n]
    return x[order], y[order, 0]
