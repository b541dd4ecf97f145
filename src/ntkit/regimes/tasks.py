"""The three tasks of ``ntkit regimes``: generated or shipped with a package, never downloaded.

* ``sin``: 1-D regression y = sin(3x) on [−1, 1] (``ntkit.data.synthetic.sin_regression``), the classic NTK
  example;
* ``spirals``: 2-D two-spirals classification (Lang & Witbrock 1988), labels ±1 regressed with the MSE;
* ``digits``: scikit-learn's 8×8 handwritten digits (1797 images that ship with scikit-learn), 10 classes as
  centred one-hot targets regressed with the MSE, as in Lee et al. 2019 and Arora et al. 2019.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ntkit.data import digits, sin_regression, two_spirals

TASKS = ("sin", "spirals", "digits")


@dataclass
class Task:
    """A regression problem: inputs (N, D) and targets (N, O), train and test; ``classes`` > 0 for tasks whose
    accuracy counts (argmax of the outputs, or their sign when O = 1)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int = 0

    def accuracy(self, f: torch.Tensor, y: torch.Tensor) -> float:
        """Fraction of rows whose predicted class (sign or argmax) is the target's."""
        if y.shape[1] == 1:
            return float((torch.sign(f) == torch.sign(y)).double().mean())
        return float((f.argmax(1) == y.argmax(1)).double().mean())


def check_task(name) -> str:
    if name not in TASKS:
        raise ValueError(f"task must be one of {TASKS}; got {name!r}")
    return name


def load_task(name: str, seed: int = 0, dtype: torch.dtype = torch.float64, n_train: int | None = None) -> Task:
    """The task ``name`` ("sin", "spirals" or "digits"); ``seed`` fixes the sample and the train/test split."""
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
