"""Taylor models of a network around its initial parameters θ0.

``linearize(model)`` is the first-order model (Lee et al., *Wide Neural Networks of Any Depth Evolve as Linear
Models Under Gradient Descent*, NeurIPS 2019, eq. 5):

    f_lin(x; θ) = f(x; θ0) + J(x; θ0) (θ − θ0),

whose training under gradient descent on the MSE is exactly the kernel dynamics of ``ntkit.predict``.
``taylor_expand(model, degree)`` keeps the terms up to ``degree``: Σ_k (1/k!) d^k/dε^k f(x; θ0 + εΔ)|_{ε=0} with
Δ = θ − θ0, each derivative a nested forward-mode product (never a Hessian).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.func import functional_call, jvp

from ntkit._validation import positive_int


class TaylorModel(nn.Module):
    """f(x; θ0 + Δ) expanded to ``degree`` in Δ = θ − θ0.

    The trainable parameters θ (``self.theta``, in the order of the wrapped model's trainable parameters) start
    at θ0; θ0, the frozen copy of the model and its buffers stay fixed.
    """

    def __init__(self, model: nn.Module, degree: int):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        degree = positive_int("degree", degree)
        trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
        if not trainable:
            raise ValueError("model has no trainable parameters (requires_grad=True) to expand around")
        self.degree = degree
        self._model = copy.deepcopy(model).requires_grad_(False)  # a frozen copy: later edits to `model` don't leak
        self._names = list(trainable)
        self.theta = nn.ParameterList([nn.Parameter(p.detach().clone()) for p in trainable.values()])
        for i, p in enumerate(trainable.values()):
            self.register_buffer(f"theta0_{i}", p.detach().clone())

    def theta0(self) -> list[torch.Tensor]:
        return [getattr(self, f"theta0_{i}") for i in range(len(self._names))]

    def displacement(self) -> list[torch.Tensor]:
        """Δ = θ − θ0 for every trainable tensor."""
        return [p - p0 for p, p0 in zip(self.theta, self.theta0(), strict=True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta0, delta = self.theta0(), self.displacement()

        def along(eps: torch.Tensor) -> torch.Tensor:  # f(x; θ0 + εΔ)
            params = {n: p0 + eps * d for n, p0, d in zip(self._names, theta0, delta, strict=True)}
            return functional_call(self._model, params, (x,))

        one = torch.ones((), dtype=theta0[0].dtype, device=theta0[0].device)
        zero = torch.zeros_like(one)
        derivative = along
        total = along(zero)
        for k in range(1, self.degree + 1):
            derivative = _directional_derivative(derivative, one)
            total = total + derivative(zero) / math.factorial(k)
        return total


def _directional_derivative(fn, one):
    return lambda eps: jvp(fn, (eps,), (one,))[1]


def linearize(model: nn.Module) -> TaylorModel:
    """f0(x) + J(x)(θ − θ0): the first-order Taylor model of ``model``, trainable with any torch optimizer."""
    return TaylorModel(model, 1)


def taylor_expand(model: nn.Module, degree: int = 2) -> TaylorModel:
    """The Taylor model of ``model`` around its current parameters up to ``degree`` in θ − θ0."""
    return TaylorModel(model, degree)
