r"""The lazy rescaling of Chizat, Oyallon & Bach (*On Lazy Training in Differentiable Programming*, NeurIPS 2019).

Train the model h_α(x) = α·(f(x; θ) − f(x; θ0)) on the loss L(h_α)/α². Gradient descent at rate η moves θ by
−(η/α)·∂f/∂θ·∇L, so h_α moves at a speed that does not depend on α (its kernel is α²Θ, times 1/α² from the loss),
while the parameters, and with them the NTK, move by O(1/α). As α → ∞ any network trains as its linearization:
the kernel change falls like 1/α. Subtracting f(x; θ0) makes h start at 0, as in their §2.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class LazyModel(nn.Module):
    """α·(f(x) − f0(x)), with ``loss_scale = 1/α²`` to multiply the loss by.

    ``model`` keeps training (its parameters are the trainable ones); ``reference`` is a frozen copy of it at
    the moment of wrapping and gives f0.
    """

    def __init__(self, model: nn.Module, alpha: float):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"alpha must be a finite number > 0; got {alpha!r}")
        self.model = model
        self.reference = copy.deepcopy(model).requires_grad_(False)
        self.alpha = float(alpha)
        self.loss_scale = 1.0 / self.alpha**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f0 = self.reference(x)
        return self.alpha * (self.model(x) - f0)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:.4g}, loss_scale={self.loss_scale:.4g}"


def lazy(model: nn.Module, alpha: float) -> LazyModel:
    """Wrap ``model`` for lazy training: forward ``alpha·(f(x) − f0(x))``, attribute ``loss_scale = 1/alpha²``.

    Parameters
    ----------
    model:
        Any ``nn.Module`` at its initial parameters θ0.
    alpha:
        The scale α > 0. α = 1 is ordinary training of f − f0; a large α makes any network lazy.

    Returns
    -------
    LazyModel
        Train it with ``loss = loss_fn(lazy_model(x), y) * lazy_model.loss_scale``.

    Raises
    ------
    ValueError
        If alpha is not a finite number > 0.

    Examples
    --------
    >>> import torch
    >>> m = lazy(torch.nn.Linear(2, 1), alpha=10.0)
    >>> float(m(torch.randn(4, 2)).detach().abs().max()), m.loss_scale
    (0.0, 0.01)
    """
    return LazyModel(model, alpha)
