"""Finite layers whose forward pass carries the parameterization's scale factors.

In the NTK parameterization (Jacot et al., 2018) a layer computes

    z = (W_std / √fan_in) · W x + b_std · b,        W, b ~ N(0, 1),

so the trainable tensors stay of order one while the output keeps a width-independent scale. The multipliers
live in the forward pass, not in the initial values, because they change the gradients (and therefore the NTK).
``weight_multiplier`` and ``bias_multiplier`` are plain attributes, so the structured empirical NTK can factor
these layers exactly: Θ_W = weight_multiplier² (h·h')(δ·δ'), Θ_b = bias_multiplier² (δ·δ').

``weight_lr_scale`` and ``bias_lr_scale`` (1 unless ``arch.build(..., parameterization="mup")`` sets them) are
the factors by which μP multiplies the learning rate of each tensor; ``ntkit.regimes.mup_param_groups`` reads
them (Yang & Hu, *Tensor Programs IV*, 2021).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class NTKLinear(nn.Linear):
    """``nn.Linear`` computing ``weight_multiplier · W x + bias_multiplier · b``."""

    weight_lr_scale: float = 1.0
    bias_lr_scale: float = 1.0

    def __init__(self, in_features: int, out_features: int, *, bias: bool, weight_multiplier: float,
                 bias_multiplier: float, dtype: torch.dtype | None = None):  # fmt: skip
        super().__init__(in_features, out_features, bias=bias, dtype=dtype)
        self.weight_multiplier, self.bias_multiplier = float(weight_multiplier), float(bias_multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.bias_multiplier
        return F.linear(x, self.weight * self.weight_multiplier, bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_multiplier={self.weight_multiplier:.4g}, " \
               f"bias_multiplier={self.bias_multiplier:.4g}"  # fmt: skip


class _ScaledConv:
    weight_lr_scale: float = 1.0
    bias_lr_scale: float = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.bias_multiplier
        return self._conv_forward(x, self.weight * self.weight_multiplier, bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_multiplier={self.weight_multiplier:.4g}, " \
               f"bias_multiplier={self.bias_multiplier:.4g}"  # fmt: skip


class NTKConv1d(_ScaledConv, nn.Conv1d):
    """``nn.Conv1d`` whose weight and bias are multiplied by constants in the forward pass."""

    def __init__(self, *args, weight_multiplier: float, bias_multiplier: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight_multiplier, self.bias_multiplier = float(weight_multiplier), float(bias_multiplier)


class NTKConv2d(_ScaledConv, nn.Conv2d):
    """``nn.Conv2d`` whose weight and bias are multiplied by constants in the forward pass."""

    def __init__(self, *args, weight_multiplier: float, bias_multiplier: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight_multiplier, self.bias_multiplier = float(weight_multiplier), float(bias_multiplier)


class Elementwise(nn.Module):
    """Applies ``fn`` elementwise (erf, sin, or any user function)."""

    def __init__(self, fn, name: str | None = None):
        super().__init__()
        self.fn, self.name = fn, name or getattr(fn, "__name__", "fn")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class ChannelLayerNorm(nn.Module):
    """Normalises each example over the channel/feature axis (axis 1) at every position, without affine terms:
    (x − mean_c x) / √(var_c x + eps)."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = x.var(1, unbiased=False, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps)


class GlobalAvgPool(nn.Module):
    """Mean over every spatial axis: (N, C, *S) → (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(2)


class ResidualBlock(nn.Module):
    """x + block(x)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ParallelBranches(nn.Module):
    """Feeds the same input to every branch and sums the outputs or concatenates them along the channel axis."""

    def __init__(self, branches: list[nn.Module], combine: str):
        super().__init__()
        self.branches, self.combine = nn.ModuleList(branches), combine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        return torch.cat(outs, dim=1) if self.combine == "concat" else sum(outs[1:], outs[0])


AFFINE_MODULES = (NTKLinear, NTKConv1d, NTKConv2d)


def to_mup(model: nn.Module, *, only_marked: bool = False) -> nn.Module:
    """Turn an NTK-parameterized network into μP, in place: a pass after ``arch.build`` (which calls it for
    ``parameterization="mup"``), so that layer specs need not know about μP.

    μP (Yang & Hu, *Tensor Programs IV: Feature Learning in Infinite-Width Neural Networks*, ICML 2021, Table 3),
    in the gauge where every stored tensor is N(0, 1) (their abc-symmetry (a, b, c) → (a + b, 0, c − 2b) per
    tensor), is the NTK network with the readout divided by √width, plus learning-rate factors. The affine
    modules (``NTKLinear``, ``NTKConv1d/2d``) in ``model.modules()`` order are the input layer (the first), the
    output layer (the last) and hidden layers; with n_in and n_out their input and output widths (channels for
    convolutions):

    * output layer: weight and bias multipliers divided by √n_in; learning-rate factors n_in and n_in;
    * input layer: factors n_out (weight) and n_out (bias); hidden layers: n_in (weight) and n_out (bias);
    * a network with a single affine layer is unchanged.

    The factors go to ``weight_lr_scale``/``bias_lr_scale`` (read by ``ntkit.regimes.mup_param_groups``), the
    role to ``mup_role``.

    Parameters
    ----------
    model:
        A network whose affine modules are NTK-parameterized (as ``arch.build`` makes them).
    only_marked:
        Convert only the affine modules whose ``parameterization`` is "mup" (roles still count all of them).

    Returns
    -------
    The same ``model``.

    Raises
    ------
    ValueError
        If a module was already converted (the readout would be divided twice) or is standard-parameterized.

    Example
    -------
    >>> import torch, ntkit as nk
    >>> model = nk.Sequential(nk.Linear(64), nk.ReLU(), nk.Linear(1)).build((3,))
    >>> to_mup(model)[-1].weight_lr_scale
    64.0
    """
    affine = [m for m in model.modules() if isinstance(m, AFFINE_MODULES)]
    for index, m in enumerate(affine):
        if only_marked and getattr(m, "parameterization", None) != "mup":
            continue
        if hasattr(m, "mup_role"):
            raise ValueError(f"{m!r} is already in μP (mup_role={m.mup_role!r}); to_mup would rescale it twice")
        if getattr(m, "parameterization", "ntk") == "standard":
            raise ValueError(f"to_mup needs NTK-parameterized modules; {m!r} is standard-parameterized")
        first, last = index == 0, index == len(affine) - 1
        role = "only" if first and last else "input" if first else "output" if last else "hidden"
        n_in = float(m.in_features if isinstance(m, NTKLinear) else m.in_channels)
        n_out = float(m.out_features if isinstance(m, NTKLinear) else m.out_channels)
        factors = {"only": (1.0, 1.0), "input": (n_out, n_out), "hidden": (n_in, n_out), "output": (n_in, n_in)}
        if role == "output":
            m.weight_multiplier /= math.sqrt(n_in)
            m.bias_multiplier /= math.sqrt(n_in)
        m.weight_lr_scale, m.bias_lr_scale = factors[role]
        m.mup_role, m.parameterization = role, "mup"
    return model
