"""ntkit: Neural Tangent Kernels for PyTorch.

>>> import torch, ntkit as nk
>>> model = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
>>> nk.empirical_ntk(model, torch.randn(5, 3)).shape
torch.Size([5, 5])
"""

from ntkit import predict, regimes
from ntkit.empirical import empirical_ntk, ntk_vector_product
from ntkit.from_torch import from_torch
from ntkit.infinite import (
    GELU,
    AvgPool1d,
    AvgPool2d,
    Conv1d,
    Conv2d,
    Elementwise,
    Erf,
    Flatten,
    GlobalAvgPool1d,
    GlobalAvgPool2d,
    Identity,
    Kernel,
    LayerNorm,
    LeakyReLU,
    Linear,
    Parallel,
    ReLU,
    Residual,
    Sequential,
    Sin,
    Tanh,
)
from ntkit.predict import linearize, taylor_expand

__version__ = "0.1.0"

__all__ = [
    "empirical_ntk", "ntk_vector_product", "predict", "regimes", "linearize", "taylor_expand",
    "Sequential", "Residual", "Parallel", "Linear", "Conv1d", "Conv2d", "AvgPool1d", "AvgPool2d",
    "GlobalAvgPool1d", "GlobalAvgPool2d", "Flatten", "LayerNorm", "ReLU", "LeakyReLU", "Erf", "GELU", "Sin",
    "Tanh", "Identity", "Elementwise", "Kernel", "__version__",
    "from_torch",
]  # fmt: skip
