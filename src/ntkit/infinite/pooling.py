"""More pooling: sum pooling (closed form), and max pooling and softmax, whose limits have no closed form.

``SumPool1d/2d`` is ``AvgPool`` times the window size Π k, so its kernels are AvgPool's times (Π k)² (as
neural-tangents' ``stax.SumPool``). ``MaxPool1d/2d`` and ``Softmax`` build finite modules, but the expectation of
a maximum or a softmax of correlated Gaussians has no closed form: their ``kernel`` raises a ValueError that
points to :func:`ntkit.monte_carlo_kernel`, which estimates any architecture's kernels from its finite networks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ntkit.infinite.kernel import Kernel
from ntkit.infinite.layers import Layer, _AvgPool


class _SumPoolModule(nn.Module):
    """Sum over non-padded windows: Π k · avg_pool."""

    def __init__(self, kernel_size: tuple[int, ...], stride: tuple[int, ...]):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.pool = {1: nn.AvgPool1d, 2: nn.AvgPool2d}[len(kernel_size)](kernel_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) * math.prod(self.kernel_size)


class _SumPool(_AvgPool):
    def __repr__(self) -> str:
        return f"SumPool{self.spatial}d({self.kernel_size}, stride={self.stride})"

    def transform(self, k: Kernel) -> Kernel:
        """K'[P, P'] = Σ_{i, j} K[sP + i, sP' + j] = (Π k)² · (AvgPool's K')."""
        factor = float(math.prod(self.kernel_size)) ** 2
        return super().transform(k).map_linear(lambda t: t * factor, self.out_shape(k.shape))

    def make_module(self, in_shape, generator):
        return _SumPoolModule(self.kernel_size, self.stride)


class SumPool1d(_SumPool):
    """Sum pooling of (N, C, L) signals; ``stride`` defaults to ``kernel_size``, no padding."""

    spatial = 1


class SumPool2d(_SumPool):
    """Sum pooling of (N, C, H, W) images; ``stride`` defaults to ``kernel_size``, no padding."""

    spatial = 2


def _no_closed_form(layer: Layer, what: str) -> ValueError:
    return ValueError(
        f"{layer!r} has no closed-form infinite-width kernel ({what}); estimate the kernels of the whole "
        "architecture with nk.monte_carlo_kernel(arch, x1, x2), which averages its finite networks over seeds"
    )


class _MaxPool(_AvgPool):  # AvgPool's arguments and shapes; no kernel
    def __repr__(self) -> str:
        return f"MaxPool{self.spatial}d({self.kernel_size}, stride={self.stride})"

    def transform(self, k: Kernel) -> Kernel:
        raise _no_closed_form(self, "E[max of correlated Gaussians · max of correlated Gaussians] has none")

    def make_module(self, in_shape, generator):
        return {1: nn.MaxPool1d, 2: nn.MaxPool2d}[self.spatial](self.kernel_size, stride=self.stride)


class MaxPool1d(_MaxPool):
    """Max pooling of (N, C, L) signals (build only; see the module docstring)."""

    spatial = 1


class MaxPool2d(_MaxPool):
    """Max pooling of (N, C, H, W) images (build only; see the module docstring)."""

    spatial = 2


class Softmax(Layer):
    """Softmax over the channel/feature axis (dim 1), e.g. over a classifier's outputs (build only: the kernel of
    a softmax of infinitely many Gaussian features is not a per-channel Gaussian expectation)."""

    fresh = False

    def __repr__(self) -> str:
        return "Softmax()"

    def transform(self, k: Kernel) -> Kernel:
        raise _no_closed_form(self, "it couples all channels, so the outputs are not i.i.d. Gaussian channels")

    def make_module(self, in_shape, generator):
        return nn.Softmax(dim=1)
