"""Transposed convolutions (no padding) in the infinite-width limit, as neural-tangents' ``stax.ConvTranspose``
with ``padding="VALID"`` and ``torch.nn.ConvTranspose1d/2d`` with ``padding=0``.

A transposed convolution with stride s and filter size k scatters every input position i to the outputs
q = s·i + o, o = 0..k−1 (output size (L − 1)·s + k), with the weight of offset o:
y_q = (W_std/√(C·Πk)) Σ_c Σ_{i, o: s·i + o = q} W_{o,c} x_{c,i} + b_std·b. The weights of different offsets are
independent, so only equal offsets on both sides of a pair survive:

    K'[q, q'] = (W_std²/Πk) · Σ_o K_s[q − o, q' − o] + b_std²,    Θ' = K' + (W_std²/Πk) · Σ_o Θ_s[q − o, q' − o],

where K_s is K dilated by s (zeros between positions) and zero outside: the window sum of a stride-1 "valid"
convolution over the dilated covariance padded by k − 1 on every side. fan_in = C·Πk as in neural-tangents.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ntkit._validation import positive_int
from ntkit.infinite.kernel import Kernel
from ntkit.infinite.layers import _Affine, _tuple, _window_sum_stride1


class _NTKConvTranspose:
    """``nn.ConvTranspose*d`` computing with ``weight_multiplier · W`` and ``bias_multiplier · b``."""

    weight_lr_scale: float = 1.0
    bias_lr_scale: float = 1.0
    functional = None

    def __init__(self, *args, weight_multiplier: float, bias_multiplier: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight_multiplier, self.bias_multiplier = float(weight_multiplier), float(bias_multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.bias_multiplier
        return type(self).functional(x, self.weight * self.weight_multiplier, bias, self.stride)


class NTKConvTranspose1d(_NTKConvTranspose, nn.ConvTranspose1d):
    functional = staticmethod(F.conv_transpose1d)


class NTKConvTranspose2d(_NTKConvTranspose, nn.ConvTranspose2d):
    functional = staticmethod(F.conv_transpose2d)


class _ConvTranspose(_Affine):
    spatial: int

    def __init__(self, out_channels: int, kernel_size, stride=1, W_std: float = 1.0, b_std: float | None = 0.0,
                 parameterization: str = "ntk"):  # fmt: skip
        super().__init__(W_std, b_std, parameterization)
        self.out_channels = positive_int("out_channels", out_channels)
        self.kernel_size = _tuple(kernel_size, self.spatial, "kernel_size")
        self.stride = _tuple(stride, self.spatial, "stride")

    def __repr__(self) -> str:
        return (f"ConvTranspose{self.spatial}d({self.out_channels}, {self.kernel_size}, stride={self.stride}, "
                f"W_std={self.W_std}, b_std={self.b_std})")  # fmt: skip

    def out_shape(self, in_shape):
        if len(in_shape) != self.spatial + 1:
            layout = {1: "(N, C, L)", 2: "(N, C, H, W)"}[self.spatial]
            raise ValueError(f"{self!r} needs {layout} inputs but gets per-example shape {in_shape}")
        sizes = [(n - 1) * s + k for n, k, s in zip(in_shape[1:], self.kernel_size, self.stride, strict=True)]
        return (self.out_channels, *sizes)

    def _scatter(self, t: torch.Tensor) -> torch.Tensor:
        """Σ_o T_s[q − o, q' − o] over the filter offsets (the window sum without the 1/Πk)."""
        lead = t.ndim - 2 * self.spatial
        for d, (k, s) in enumerate(zip(self.kernel_size, self.stride, strict=True)):
            axis = lead + 2 * d
            n = t.shape[axis]
            size = (n - 1) * s + 1 + 2 * (k - 1)
            shape = list(t.shape)
            shape[axis] = shape[axis + 1] = size
            out = t.new_zeros(shape)
            index = [slice(None)] * t.ndim
            index[axis] = index[axis + 1] = slice(k - 1, k - 1 + (n - 1) * s + 1, s)
            out[tuple(index)] = t
            t = out
        return _window_sum_stride1(t, self.kernel_size, "valid")

    def transform(self, k: Kernel) -> Kernel:
        shape = self.out_shape(k.shape)
        fan_in = k.shape[0] * math.prod(self.kernel_size)
        return self._affine_kernel(k, self._scatter, fan_in, shape, scale=1.0 / math.prod(self.kernel_size))

    def make_module(self, in_shape, generator):
        cls = {1: NTKConvTranspose1d, 2: NTKConvTranspose2d}[self.spatial]
        fan_in = in_shape[0] * math.prod(self.kernel_size)
        return self._make(cls, fan_in, generator, in_shape[0], self.out_channels, self.kernel_size, stride=self.stride)


class ConvTranspose1d(_ConvTranspose):
    """Transposed 1-D convolution of (N, C, L) signals, no padding: output length (L − 1)·stride + kernel_size
    (``torch.nn.ConvTranspose1d(padding=0)``); kernels in the module docstring."""

    spatial = 1


class ConvTranspose2d(_ConvTranspose):
    """Transposed 2-D convolution of (N, C, H, W) images, no padding: each side (n − 1)·stride + kernel_size
    (``torch.nn.ConvTranspose2d(padding=0)``); kernels in the module docstring."""

    spatial = 2
