"""Helpers that every study shares: one learning-rate rule and one slope fitter."""

from __future__ import annotations

import torch

from ntkit._validation import real_number
from ntkit.data.tasks import Task
from ntkit.predict import max_learning_rate
from ntkit.theory.learning_curves import log_log_slope  # noqa: F401  (re-exported: the one slope fitter lives in theory)


def stable_learning_rate(kernel, task: Task, fraction: float = 1.0) -> float:
    """``fraction`` of the largest stable step of discrete gradient descent on ``task``'s training set.

    For the loss ‖f(X) − y‖²/(2·S) with S = N·O outputs, a step multiplies the residual by I − (η/S)Θ, stable while
    η < η_max = 2·S/λ_max(Θ) (:func:`ntkit.predict.max_learning_rate`). One rate from the infinite-width kernel
    serves every width of a sweep, so that only the width changes along it (Lee et al. 2019, section 2.4).

    Parameters
    ----------
    kernel:
        A layer spec (its analytic NTK on ``task.x_train`` is used) or the (N, N) train-train NTK itself.
    task:
        The task; its ``y_train.numel()`` is S.
    fraction:
        η / η_max, a finite number in (0, 1].

    Returns
    -------
    float
        fraction · 2·S/λ_max.

    Raises
    ------
    TypeError
        When ``fraction`` is not a real number.
    ValueError
        When ``fraction`` is not a finite number in (0, 1].

    Example
    -------
    >>> from ntkit import Linear, ReLU, Sequential
    >>> from ntkit.data.tasks import load_task
    >>> rate = stable_learning_rate(Sequential(Linear(1, b_std=1), ReLU(), Linear(1)), load_task("sin"), 0.5)
    """
    if real_number("fraction", fraction, positive=True) > 1:
        raise ValueError(f"fraction (of the largest stable learning rate) must be ≤ 1; got {fraction!r}")
    k = kernel if isinstance(kernel, torch.Tensor) else kernel.kernel(task.x_train).ntk
    return fraction * max_learning_rate(k, task.y_train.numel())
