"""Lazy training against feature learning: instruments that say where a network sits between the two.

* :class:`KernelTracker`: the NTK, weights, ReLU patterns and linearization gap of any training loop.
* :func:`mlp`, :func:`cnn`, :func:`mlp_spec`, :func:`mup_param_groups`: one network in the NTK, standard or μP
  parameterization (Yang & Hu 2021), with μP's per-layer learning rates.
* :func:`lazy`: the Chizat–Bach rescaling α·(f − f0) that makes any network lazy.
* :func:`relative_change`, :func:`kernel_distance`, :func:`centered_alignment`: the numbers themselves.

>>> import torch
>>> from ntkit import regimes
>>> model = regimes.mlp(2, 256, 1, parameterization="mup", dtype=torch.float64)
>>> opt = torch.optim.SGD(regimes.mup_param_groups(model, 0.05))
>>> tracker = regimes.KernelTracker(model, torch.randn(6, 2, dtype=torch.float64), every=1)
"""

from ntkit.modules import to_mup  # μP as a pass after building (issue 13)
from ntkit.regimes.lazy import LazyModel, lazy
from ntkit.regimes.metrics import centered_alignment, kernel_distance, relative_change
from ntkit.regimes.parameterization import (
    ACTIVATIONS,
    PARAMETERIZATIONS,
    cnn,
    cnn_spec,
    mlp,
    mlp_spec,
    mup_param_groups,
)
from ntkit.regimes.tracker import KernelTracker

__all__ = [
    "PARAMETERIZATIONS", "ACTIVATIONS", "KernelTracker", "LazyModel", "lazy", "mlp", "mlp_spec", "cnn", "cnn_spec",
    "mup_param_groups", "relative_change", "kernel_distance", "centered_alignment", "to_mup",
]  # fmt: skip
