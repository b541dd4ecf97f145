r"""Three parameterizations of one network, and the learning rates that go with them.

With width n, a layer z = m·W x + β·b stores W, b and multiplies them by m, β in forward (``ntkit.modules``).
In the abc-notation of Yang & Hu (*Tensor Programs IV: Feature Learning in Infinite-Width Neural Networks*,
ICML 2021, §3 and Table 3) a weight is W = n^{-a} w with w ~ N(0, n^{-2b}), trained by SGD at the rate η n^{-c}.
The dynamics do not change under (a, b, c) → (a + θ, b − θ, c − 2θ), applied to any tensor, so we take every
stored tensor N(0, 1) (b = 0) and read μP off their table in that gauge:

================  ==========================  ====================================
tensor            NTK ("ntk")                 μP ("mup")
================  ==========================  ====================================
input weight      W_std/√fan_in, lr η         W_std/√fan_in, lr η·fan_out
hidden weight     W_std/√fan_in, lr η         W_std/√fan_in, lr η·fan_in
output weight     W_std/√fan_in, lr η         W_std/(√fan_in·√n), lr η·n
hidden biases     b_std, lr η                 b_std, lr η·fan_out
output bias       b_std, lr η                 b_std/√n, lr η·n
================  ==========================  ====================================

Standard ("standard"): W ~ N(0, W_std²/fan_in), b ~ N(0, b_std²) are stored as they are (multiplier 1), lr η.
(n = fan_in of the output layer; for convolutions the widths are channel counts.) For an MLP of one width n
this is the familiar statement: **μP is the NTK-parameterized network with its output divided by √n, trained
with every learning rate multiplied by n**. At initialisation f_μP = f_NTK/√n and the NTK weighted by the
learning rates equals the NTK parameterization's, so training starts at the same speed in function space; but
each hidden pre-activation now moves by Θ(1) instead of Θ(1/√n): features are learned at any width, while under
the NTK parameterization the kernel freezes as n → ∞ (Jacot et al. 2018).

One deviation from the paper: Yang & Hu (Tensor Programs V, Table 3) keep the output bias at O(1) initial
scale; here it is divided by √n with the output weights, so that f_μP = f_NTK/√n exactly. Its learning-rate
weighted effect on f is the same Θ(1) either way; only the constant offset of f at initialisation differs.

Under the standard parameterization the NTK grows like n, so a fixed learning rate diverges at large width; the
largest stable rate falls like 1/n, and with it the training enters the kernel regime too (Yang & Hu 2021, §3).
``mup_param_groups`` gives it one group at the rate you pass: scale it yourself (``ntkit regimes`` uses η/n).

The infinite-width kernels of μP are degenerate (the NTK is Θ_NTK/n → 0 and moves by O(1) in training), so
``arch.kernel`` refuses "mup" layers; build them with ``arch.build(..., parameterization="mup")``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ntkit._validation import PARAMETERIZATIONS, positive_int
from ntkit._validation import parameterization as check_parameterization
from ntkit.infinite import GELU, Conv2d, Erf, GlobalAvgPool2d, Linear, ReLU, Sequential, Tanh

ACTIVATIONS = {"relu": ReLU, "erf": Erf, "gelu": GELU, "tanh": Tanh}

__all__ = ["PARAMETERIZATIONS", "ACTIVATIONS", "mlp_spec", "mlp", "cnn_spec", "cnn", "mup_param_groups"]


def _activation(activation: str):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}; got {activation!r}")
    return ACTIVATIONS[activation]


def mlp_spec(width: int, out_features: int, depth: int = 1, activation: str = "relu", W_std: float = 1.0,
             b_std: float = 0.1, parameterization: str = "ntk") -> Sequential:  # fmt: skip
    """The layer spec of an MLP: ``depth`` hidden layers of ``width`` units, then a Linear readout.

    ``Sequential(Linear(width), φ, …, Linear(width), φ, Linear(out_features))``, every Linear with ``W_std``,
    ``b_std`` and ``parameterization``. Under "ntk" and "standard", ``spec.kernel(x1, x2)`` is the analytic
    limit of ``spec.build(...)``; under "mup" the kernel is degenerate and refused (see the module docstring).

    Parameters
    ----------
    width:
        Hidden units per layer (the n of the parameterizations).
    out_features:
        Outputs.
    depth:
        Number of hidden layers, at least 1.
    activation:
        "relu", "erf", "gelu" or "tanh".
    W_std, b_std:
        Weight and bias scales (Jacot et al. 2018 use b_std = 0.1 in their figure 1).
    parameterization:
        "ntk", "standard" or "mup".

    Examples
    --------
    >>> import torch
    >>> spec = mlp_spec(512, 1, depth=2)
    >>> spec.kernel(torch.randn(3, 2, dtype=torch.float64)).ntk.shape
    torch.Size([3, 3])
    """
    phi = _checked_activation(width, out_features, depth, activation, parameterization)
    layers = []
    for _ in range(depth):
        layers += [Linear(width, W_std=W_std, b_std=b_std, parameterization=parameterization), phi()]
    layers.append(Linear(out_features, W_std=W_std, b_std=b_std, parameterization=parameterization))
    return Sequential(*layers)


def mlp(in_features: int, width: int, out_features: int, depth: int = 1, activation: str = "relu",
        parameterization: str = "ntk", W_std: float = 1.0, b_std: float = 0.1, seed: int = 0,
        dtype: torch.dtype = torch.float32) -> nn.Module:  # fmt: skip
    """A trainable MLP in the chosen parameterization, built from :func:`mlp_spec`.

    Train it with ``torch.optim.SGD(mup_param_groups(model, lr))``: under "mup" the groups carry μP's per-layer
    learning rates (η·n), under "ntk" and "standard" one group at ``lr``.

    Parameters
    ----------
    in_features:
        Input dimension.
    width, out_features, depth, activation, W_std, b_std, parameterization:
        As in :func:`mlp_spec`.
    seed:
        Seed of the initial weights.
    dtype:
        dtype of the parameters.

    Returns
    -------
    torch.nn.Module
        An ``nn.Sequential`` of ``ntkit.modules.NTKLinear`` and activations; its empirical NTK (NTK
        parameterization) converges to ``mlp_spec(...).kernel(...).ntk`` as ``width`` grows.

    Examples
    --------
    >>> model = mlp(2, 64, 1, parameterization="mup")
    >>> model[-1].weight_multiplier == 1.0 / 64
    True
    """
    positive_int("in_features", in_features)
    spec = mlp_spec(width, out_features, depth, activation, W_std, b_std, parameterization)
    return spec.build((in_features,), seed=seed, dtype=dtype, parameterization=parameterization)


def _checked_activation(width, out_features, depth, activation, parameterization):
    """Check the arguments every spec builder shares and return the activation's layer class."""
    positive_int("width", width)
    positive_int("out_features", out_features)
    positive_int("depth", depth)
    check_parameterization(parameterization)
    return _activation(activation)


def cnn_spec(width: int, out_features: int, depth: int = 1, kernel_size: int = 3, activation: str = "relu",
             W_std: float = 1.0, b_std: float = 0.1, parameterization: str = "ntk") -> Sequential:  # fmt: skip
    """A convolutional network: ``depth`` × (Conv2d(width, kernel_size, "same"), φ), global average pooling and
    a Linear readout. The width is the channel count. Arguments as in :func:`mlp_spec`."""
    phi = _checked_activation(width, out_features, depth, activation, parameterization)
    layers = []
    for _ in range(depth):
        layers += [Conv2d(width, kernel_size, W_std=W_std, b_std=b_std, parameterization=parameterization), phi()]
    layers += [GlobalAvgPool2d(), Linear(out_features, W_std=W_std, b_std=b_std, parameterization=parameterization)]
    return Sequential(*layers)


def cnn(in_shape: tuple[int, int, int], width: int, out_features: int, depth: int = 1, kernel_size: int = 3,
        activation: str = "relu", parameterization: str = "ntk", W_std: float = 1.0, b_std: float = 0.1,
        seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:  # fmt: skip
    """A trainable CNN on (N, C, H, W) images in the chosen parameterization, built from :func:`cnn_spec`."""
    spec = cnn_spec(width, out_features, depth, kernel_size, activation, W_std, b_std, parameterization)
    return spec.build(tuple(in_shape), seed=seed, dtype=dtype, parameterization=parameterization)


def mup_param_groups(model: nn.Module, learning_rate: float) -> list[dict]:
    """Optimizer parameter groups with μP's per-layer learning rates.

    Every trainable tensor of a module built with ``parameterization="mup"`` gets ``learning_rate`` times its
    module's ``weight_lr_scale`` or ``bias_lr_scale`` (see the table in this module's docstring; for an MLP of
    width n all of them are n). Other tensors (NTK or standard modules, any other layer) get ``learning_rate``,
    so for "ntk" and "standard" models the result is one group. Parameters with ``requires_grad=False`` are left
    out (e.g. the frozen copy inside :func:`ntkit.regimes.lazy`).

    Parameters
    ----------
    model:
        Any ``nn.Module``.
    learning_rate:
        The base rate η > 0.

    Returns
    -------
    list of dict
        ``[{"params": [...], "lr": η·s, "lr_scale": s, "names": [...]}, ...]``, one group per distinct scale s,
        ready for ``torch.optim.SGD(groups)``.

    Examples
    --------
    >>> from ntkit.regimes import mlp
    >>> groups = mup_param_groups(mlp(1, 128, 1, parameterization="mup"), 0.1)
    >>> [(round(g["lr"], 6), len(g["params"])) for g in groups]
    [(12.8, 4)]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or \
            not math.isfinite(learning_rate) or learning_rate <= 0:  # fmt: skip
        raise ValueError(f"learning_rate must be a finite number > 0; got {learning_rate!r}")
    scale_of: dict[int, float] = {}
    for module in model.modules():
        for attr, scale in (("weight", "weight_lr_scale"), ("bias", "bias_lr_scale")):
            p = getattr(module, attr, None)
            if isinstance(p, nn.Parameter) and hasattr(module, scale):
                scale_of[id(p)] = float(getattr(module, scale))
    groups: dict[float, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        s = scale_of.get(id(p), 1.0)
        group = groups.setdefault(s, {"params": [], "lr": learning_rate * s, "lr_scale": s, "names": []})
        group["params"].append(p)
        group["names"].append(name)
    if not groups:
        raise ValueError("model has no trainable parameters (requires_grad=True)")
    return list(groups.values())
