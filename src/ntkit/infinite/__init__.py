"""The infinite-width limit: one layer spec gives the exact NNGP/NTK and the finite network that converges to it.

>>> import torch, ntkit as nk
>>> arch = nk.Sequential(nk.Linear(512, W_std=1.5, b_std=0.1), nk.ReLU(), nk.Linear(1))
>>> k = arch.kernel(torch.randn(4, 3, dtype=torch.float64))
>>> k.nngp.shape, k.ntk.shape
(torch.Size([4, 4]), torch.Size([4, 4]))
"""

from ntkit.infinite.activations import (
    GELU,
    Activation,
    Elementwise,
    Erf,
    Identity,
    LeakyReLU,
    ReLU,
    Sin,
    Tanh,
    relu_kernels,
)
from ntkit.infinite.combinators import Parallel, Residual, Sequential
from ntkit.infinite.kernel import Kernel
from ntkit.infinite.layers import (
    AvgPool1d,
    AvgPool2d,
    Conv1d,
    Conv2d,
    Flatten,
    GlobalAvgPool1d,
    GlobalAvgPool2d,
    Layer,
    LayerNorm,
    Linear,
)

__all__ = [
    "Activation", "AvgPool1d", "AvgPool2d", "Conv1d", "Conv2d", "Elementwise", "Erf", "Flatten", "GELU",
    "GlobalAvgPool1d", "GlobalAvgPool2d", "Identity", "Kernel", "Layer", "LayerNorm", "LeakyReLU", "Linear",
    "Parallel", "ReLU", "Residual", "Sequential", "Sin", "Tanh", "relu_kernels",
]  # fmt: skip

# issue 13: attention, more activations and pooling, Monte Carlo kernels
from ntkit.infinite.activations import (  # noqa: E402
    ELU,
    ABReLU,
    Abs,
    Cos,
    Exp,
    Gaussian,
    Hermite,
    Monomial,
    Rbf,
    RectifiedMonomial,
    Sign,
    SiLU,
    Softplus,
)
from ntkit.infinite.attention import SelfAttention  # noqa: E402
from ntkit.infinite.monte_carlo import MonteCarloKernel, monte_carlo_kernel  # noqa: E402
from ntkit.infinite.pooling import MaxPool1d, MaxPool2d, Softmax, SumPool1d, SumPool2d  # noqa: E402
from ntkit.infinite.recurrent import RNN, sequence_kernel  # noqa: E402
from ntkit.infinite.transposed import ConvTranspose1d, ConvTranspose2d  # noqa: E402

__all__ += [
    "ABReLU", "Abs", "Cos", "ELU", "Exp", "Gaussian", "Hermite", "Monomial", "Rbf", "RectifiedMonomial", "SiLU",
    "Sign", "Softplus", "SelfAttention", "MonteCarloKernel", "monte_carlo_kernel", "MaxPool1d", "MaxPool2d",
    "Softmax", "SumPool1d", "SumPool2d", "RNN", "sequence_kernel",
    "ConvTranspose1d", "ConvTranspose2d",
]  # fmt: skip
