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
    ELU,
    GELU,
    RNN,
    ABReLU,
    Abs,
    AvgPool1d,
    AvgPool2d,
    Conv1d,
    Conv2d,
    ConvTranspose1d,
    ConvTranspose2d,
    Cos,
    Elementwise,
    Erf,
    Exp,
    Flatten,
    Gaussian,
    GlobalAvgPool1d,
    GlobalAvgPool2d,
    Hermite,
    Identity,
    Kernel,
    LayerNorm,
    LeakyReLU,
    Linear,
    MaxPool1d,
    MaxPool2d,
    Monomial,
    MonteCarloKernel,
    Parallel,
    Rbf,
    RectifiedMonomial,
    ReLU,
    Residual,
    SelfAttention,
    Sequential,
    Sign,
    SiLU,
    Sin,
    Softmax,
    Softplus,
    SumPool1d,
    SumPool2d,
    Tanh,
    monte_carlo_kernel,
    sequence_kernel,
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

__all__ += [
    "ABReLU", "Abs", "Cos", "ELU", "Exp", "Gaussian", "Hermite", "Monomial", "Rbf", "RectifiedMonomial", "SiLU",
    "Sign", "Softplus", "SelfAttention", "MonteCarloKernel", "monte_carlo_kernel", "MaxPool1d", "MaxPool2d",
    "Softmax", "SumPool1d", "SumPool2d", "RNN", "sequence_kernel",
    "ConvTranspose1d", "ConvTranspose2d",
]  # fmt: skip
