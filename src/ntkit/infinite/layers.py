"""Layer specs: each one is a small object with three faces (after neural-tangents' stax).

* ``out_shape(in_shape)``  checks the input and gives the per-example output shape;
* ``transform(kernel)``   maps the infinite-width NNGP/NTK (``ntkit.infinite.kernel.Kernel``);
* ``make_module(in_shape, generator)``  builds the finite ``nn.Module`` that converges to that kernel.

Every spec is also an architecture: ``spec.kernel(x1, x2)`` and ``spec.build(in_shape, seed)``.

Conventions (NTK parameterization, Jacot et al. 2018): a Linear or Conv layer computes
z = (W_std/√fan_in)·W x + b_std·b with W, b ~ N(0, 1), fan_in = in_features or in_channels·kernel_size, so

    K' = W_std² · M(K) + b_std²,        Θ' = K' + W_std² · M(Θ),

where M is the identity for Linear (of the per-feature covariance) and the mean over the filter window for a
convolution (zero padding contributes 0 and still counts). Under ``parameterization="standard"``
(Sohl-Dickstein et al., *On the infinite width limit of neural networks with a standard parameterization*,
2020) W ~ N(0, W_std²/fan_in) and b ~ N(0, b_std²) are the parameters themselves, K' is unchanged and

    Θ' = fan_in · M(K) + W_std² · M(Θ) + [bias],

which depends on the widths.

Under ``parameterization="mup"`` (μP, Yang & Hu, *Tensor Programs IV: Feature Learning in Infinite-Width Neural
Networks*, ICML 2021, Table 3) the finite network is the NTK-parameterized one with the output layer divided by
√width, trained with learning rates multiplied by the width (see ``ntkit.regimes.mup_param_groups``); which
layer is the input and which the output is only known to a whole architecture, so μP is chosen at
``arch.build(..., parameterization="mup")``. Its infinite-width NTK is Θ_NTK/width → 0 and the kernel moves by
O(1) during training, so :meth:`Layer.kernel` refuses it (see ``ntkit.regimes.parameterization``).
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ntkit._validation import (
    check_memory,
    kernel_kinds,
    optional_real_number,
    positive_int,
    real_number,
    shape_tuple,
)
from ntkit._validation import parameterization as check_parameterization
from ntkit.infinite import _fused
from ntkit.infinite.blocked import blocked_kernel, default_batch_size, output_bytes, working_bytes
from ntkit.infinite.kernel import Kernel, cached_self_map, pair_variances, set_self_pairs, spatial_diagonal
from ntkit.modules import ChannelLayerNorm, GlobalAvgPool, NTKConv1d, NTKConv2d, NTKLinear, to_mup

PADDINGS = ("same", "valid", "circular")


@dataclass
class _BuildContext:
    """What ``Layer.build`` tells the layers it makes: the build-level parameterization (None: each layer keeps
    its own). μP's layer roles are not needed here: ``ntkit.modules.to_mup`` assigns them after building."""

    parameterization: str | None


_BUILD: contextvars.ContextVar[_BuildContext | None] = contextvars.ContextVar("ntkit_build", default=None)


class Layer:
    """Base class of every layer spec and combinator."""

    #: True when the output is a fresh linear image of the input (independent of it, zero mean), False when it
    #: is not, None when the layer passes its input's status through (pooling, flattening).
    fresh: bool | None = None

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape

    def transform(self, k: Kernel) -> Kernel:
        """The kernels after this layer. Pure: never writes into ``k``'s tensors (``Parallel`` hands one Kernel
        to every branch, ``Residual`` reuses its input); tests/infinite/test_pure_transforms.py checks every spec."""
        raise NotImplementedError

    def affine_layers(self) -> list[Layer]:
        """The Linear/Conv specs inside, in the order ``make_module`` makes them (μP's layer roles)."""
        return []

    def make_module(self, in_shape: tuple[int, ...], generator: torch.Generator) -> nn.Module:
        raise NotImplementedError

    # --- the public faces -------------------------------------------------------------------------------------

    def kernel(self, x1: torch.Tensor, x2: torch.Tensor | None = None, *, get=("nngp", "ntk"),
               batch_size: int | None = None, progress: bool | None = None) -> Kernel:  # fmt: skip
        """The infinite-width NNGP and NTK between x1 and x2 (x2=None: x1 with itself).

        Parameters
        ----------
        x1, x2:
            Inputs (N, D), (N, C, L) or (N, C, H, W) of one floating dtype and device; x2=None means x1.
        get:
            "nngp", "ntk" or both (the default). A kernel not asked for is None in the result and costs no
            memory; without "ntk" the NTK is not computed at all.
        batch_size:
            Examples per side of the blocks carried through the whole network at once
            (``ntkit.infinite.blocked``); None picks a few MiB per block. It changes memory and speed, not the
            result: every self-pair K(x, x) is bit-identical whatever the partition, the rest agrees to rounding.
        progress:
            A progress bar over the blocks: None shows it once the call has run for 2 s, True at once, False never.

        Returns
        -------
        Kernel whose ``.nngp`` and ``.ntk`` are (N1, N2) tensors with the dtype and device of x1 once the
        architecture has reduced its spatial axes (Flatten, GlobalAvgPool), else (N1, N2, *pair axes). When x2 is
        None both are exactly symmetric, and only about half of the blocks are computed.

        Raises
        ------
        MemoryBudgetError
            Before allocating, when the results and the blocks in flight would not fit in the memory available.
        FloatingPointError
            When a kernel overflows (NaN or inf) instead of returning it.
        """
        _check_inputs(x1, x2)
        kinds = kernel_kinds(get)
        out_shape = self.out_shape(tuple(x1.shape[1:]))
        n = max(x1.shape[0], 0 if x2 is None else x2.shape[0])
        batch = default_batch_size(x1, n) if batch_size is None else batch_size
        needed = output_bytes(x1, x2, out_shape, len(kinds)) + working_bytes(x1, min(batch, n))
        check_memory(needed, x1.device, f"{type(self).__name__}.kernel on {x1.shape[0]}×"
                     f"{x1.shape[0] if x2 is None else x2.shape[0]} inputs ({', '.join(kinds)}, {x1.dtype})",
                     "pass fewer rows, get='nngp' or get='ntk' alone, float32 inputs, a smaller batch_size, or "
                     "compute it in tiles on disk with ntkit.scale.kernel")  # fmt: skip
        finite = (f"{type(self).__name__}.kernel(...)",
                  "a variance overflowed; use float64 inputs, smaller inputs or a smaller W_std")  # fmt: skip
        return blocked_kernel(self.transform, x1, x2, batch_size, kinds=kinds, progress=progress, finite=finite)

    def build(self, in_shape: Sequence[int], seed: int = 0, dtype: torch.dtype = torch.float32,
              parameterization: str | None = None) -> nn.Module:  # fmt: skip
        """The finite network with the widths given in the specs, weights drawn from ``seed``.

        Its empirical NTK (``ntkit.empirical_ntk``, output="mean") converges to ``kernel(...).ntk`` and the
        covariance of its outputs over seeds to ``kernel(...).nngp`` as the widths grow (NTK and standard
        parameterizations).

        Parameters
        ----------
        in_shape:
            Per-example input shape, e.g. ``(3,)`` or ``(3, 32, 32)``.
        seed:
            Seed of the weights' generator.
        dtype:
            dtype of the parameters.
        parameterization:
            ``None`` keeps each layer's own; ``"ntk"``, ``"standard"`` or ``"mup"`` overrides every Linear/Conv
            layer. Under ``"mup"`` (Yang & Hu 2021) the network is built in the NTK parameterization and then
            passed through ``ntkit.modules.to_mup``: the first affine layer is the input layer and the last one
            the output layer; every affine module gets ``weight_lr_scale``/``bias_lr_scale`` attributes, the
            factors by which ``ntkit.regimes.mup_param_groups`` multiplies the learning rate.
        """
        in_shape = shape_tuple("in_shape", in_shape)
        if parameterization is not None:
            check_parameterization(parameterization)
        self.out_shape(in_shape)
        token = _BUILD.set(_BuildContext(parameterization))
        try:
            module = self.make_module(in_shape, torch.Generator().manual_seed(seed))
        finally:
            _BUILD.reset(token)
        if any(getattr(m, "parameterization", None) == "mup" for m in module.modules()):
            to_mup(module, only_marked=True)  # μP: the NTK network with its readout and learning rates rescaled
        return module.to(dtype)


def _check_inputs(x1: torch.Tensor, x2: torch.Tensor | None) -> None:
    for name, x in (("x1", x1), ("x2", x2)):
        if x is None:
            continue
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor; got {getattr(x, 'dtype', type(x))}")
        if x.ndim < 2 or x.shape[0] == 0:
            raise ValueError(f"{name} must be (N, D), (N, C, L) or (N, C, H, W) with N ≥ 1; got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or Inf values")
    if x2 is not None:
        if x2.shape[1:] != x1.shape[1:]:
            raise ValueError(f"x2 must have the trailing shape of x1, {tuple(x1.shape[1:])}; got {tuple(x2.shape[1:])}")
        if x2.dtype != x1.dtype or x2.device != x1.device:
            raise ValueError(f"x2 must have the dtype and device of x1 ({x1.dtype}, {x1.device}); "
                             f"got {x2.dtype}, {x2.device}")  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Dense and convolutional layers


class _Affine(Layer):
    fresh = True

    def __init__(self, W_std: float, b_std: float | None, parameterization: str):
        self.W_std = real_number("W_std", W_std, positive=True)
        self.b_std = optional_real_number("b_std", b_std, nonnegative=True)
        self.parameterization = check_parameterization(parameterization)

    def affine_layers(self) -> list[Layer]:
        return [self]

    @property
    def has_bias(self) -> bool:
        """NTK parameterization and μP: b_std·b matters only if b_std > 0. Standard: b is a parameter unless
        b_std=None."""
        return self._has_bias(self.parameterization)

    def _has_bias(self, parameterization: str) -> bool:
        if parameterization in ("ntk", "mup"):
            return bool(self.b_std)
        return self.b_std is not None

    def _build_parameterization(self) -> str:
        """The parameterization of the module about to be made: the build-level one if given, else the layer's."""
        ctx = _BUILD.get()
        return self.parameterization if ctx is None or ctx.parameterization is None else ctx.parameterization

    def _affine_kernel(self, k: Kernel, window_mean, fan_in: int, shape: tuple[int, ...], scale: float = 1.0) -> Kernel:
        """K' = W_std²·M(K) + b_std² and Θ' as in the module docstring, with M(t) = scale·window_mean(t) (a window
        sum and scale = 1/Π k lets the 1/Π k ride on the multiplication by W_std²: one pass less)."""
        if self.parameterization == "mup":
            raise ValueError(
                f"{self!r}: the infinite-width kernels of μP are degenerate: its output and NTK are the NTK "
                "parameterization's divided by √width and width, which vanish, while training moves the kernel "
                "by O(1) (Yang & Hu 2021). Use parameterization='ntk' for the kernel at initialisation (the μP "
                "NTK weighted by its per-layer learning rates has the same limit), or measure μP empirically "
                "with ntkit.regimes.KernelTracker"
            )
        b2 = (self.b_std or 0.0) ** 2
        w2 = self.W_std**2 * scale
        mean = window_mean(k.nngp)
        # in place when the window mean made a new tensor (convolutions); Linear's is the input itself
        nngp = (mean.mul_(w2) if mean is not k.nngp else w2 * mean).add_(b2)
        if k.ntk is None:
            ntk = None
        elif self.parameterization == "ntk":
            if isinstance(w2, torch.Tensor):  # W_std a tensor that requires grad (ntkit.sklearn's kernel gradients)
                ntk = nngp + w2 * window_mean(k.ntk)
            else:
                ntk = torch.add(nngp, window_mean(k.ntk), alpha=w2)
        else:
            ntk = (fan_in * scale) * window_mean(k.nngp) + w2 * window_mean(k.ntk) + (1.0 if self.has_bias else 0.0)
        var1, var2 = (cached_self_map(self, v, lambda t: (w2 * window_mean(t) + b2,)) for v in (k.var1, k.var2))
        return Kernel(nngp, ntk, var1[0], None if var2 is None else var2[0], shape, is_gaussian=True)

    def _init(self, module: nn.Module, fan_in: int, generator: torch.Generator, parameterization: str) -> nn.Module:
        """N(0, 1) parameters scaled in forward (NTK, μP), or N(0, W_std²/fan_in) and N(0, b_std²) (standard)."""
        with torch.no_grad():
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
            if module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator))
            if parameterization == "standard":
                module.weight.mul_(self.W_std / math.sqrt(fan_in))
                if module.bias is not None:
                    module.bias.mul_(self.b_std)
        module.parameterization = parameterization
        return module

    def _multipliers(self, parameterization: str, fan_in: int) -> dict:
        """Forward multipliers: W_std/√fan_in and b_std (NTK, and μP before ``to_mup`` rescales the readout), or
        1 and 1 (standard: the scale is in the initial values)."""
        if parameterization == "standard":
            return {"weight_multiplier": 1.0, "bias_multiplier": 1.0}
        return {"weight_multiplier": self.W_std / math.sqrt(fan_in), "bias_multiplier": self.b_std or 0.0}

    def _make(self, cls, fan_in: int, generator: torch.Generator, *args, **kwargs):
        parameterization = self._build_parameterization()
        module = cls(*args, bias=self._has_bias(parameterization), **self._multipliers(parameterization, fan_in),
                     **kwargs)  # fmt: skip
        return self._init(module, fan_in, generator, parameterization)


class Linear(_Affine):
    """Dense layer on (N, D) features: z = (W_std/√D)·W x + b_std·b (NTK parameterization).

    K' = W_std² K + b_std²,  Θ' = K' + W_std² Θ  (Jacot et al., 2018). ``out_features`` is the width of the
    finite network that :meth:`build` makes; the NTK-parameterized kernels do not depend on it.
    """

    def __init__(self, out_features: int, W_std: float = 1.0, b_std: float | None = 0.0,
                 parameterization: str = "ntk"):  # fmt: skip
        super().__init__(W_std, b_std, parameterization)
        self.out_features = positive_int("out_features", out_features)

    def __repr__(self) -> str:
        return f"Linear({self.out_features}, W_std={self.W_std}, b_std={self.b_std}, '{self.parameterization}')"

    def out_shape(self, in_shape):
        if len(in_shape) != 1:
            raise ValueError(
                f"{self!r} needs (N, D) features but gets per-example shape {in_shape}; add nk.Flatten() or "
                f"nk.GlobalAvgPool{len(in_shape) - 1}d() before it"
            )
        return (self.out_features,)

    def transform(self, k):
        if self.parameterization == "ntk" and not isinstance(self.W_std, torch.Tensor):
            w2, b2 = self.W_std**2, (self.b_std or 0.0) ** 2
            fused = _fused.dense_affine(k.nngp, k.ntk, w2, b2)  # both kinds in one pass
            if fused is not None:
                var1, var2 = (cached_self_map(self, v, lambda t: (w2 * t + b2,)) for v in (k.var1, k.var2))
                return Kernel(
                    *fused, var1[0], None if var2 is None else var2[0], (self.out_features,), is_gaussian=True
                )
        return self._affine_kernel(k, lambda t: t, k.shape[0], (self.out_features,))

    def make_module(self, in_shape, generator):
        fan_in = in_shape[0]
        return self._make(NTKLinear, fan_in, generator, fan_in, self.out_features)


class _Conv(_Affine):
    spatial: int

    def __init__(self, out_channels: int, kernel_size, stride=1, padding: str = "same", W_std: float = 1.0,
                 b_std: float | None = 0.0, parameterization: str = "ntk"):  # fmt: skip
        super().__init__(W_std, b_std, parameterization)
        self.out_channels = positive_int("out_channels", out_channels)
        self.kernel_size = _tuple(kernel_size, self.spatial, "kernel_size")
        self.stride = _tuple(stride, self.spatial, "stride")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}; got {padding!r}")
        if padding != "valid" and any(s != 1 for s in self.stride):
            raise ValueError(f"padding={padding!r} needs stride 1 (as in torch.nn.Conv{self.spatial}d); "
                             f"got stride={self.stride}; use padding='valid' or pool afterwards")  # fmt: skip
        self.padding = padding

    def __repr__(self) -> str:
        return (f"Conv{self.spatial}d({self.out_channels}, {self.kernel_size}, stride={self.stride}, "
                f"padding='{self.padding}', W_std={self.W_std}, b_std={self.b_std})")  # fmt: skip

    def out_shape(self, in_shape):
        if len(in_shape) != self.spatial + 1:
            layout = {1: "(N, C, L)", 2: "(N, C, H, W)"}[self.spatial]
            raise ValueError(f"{self!r} needs {layout} inputs but gets per-example shape {in_shape}")
        sizes = []
        for size, k, s in zip(in_shape[1:], self.kernel_size, self.stride, strict=True):
            if self.padding == "valid" and k > size:
                raise ValueError(f"{self!r}: kernel size {k} is larger than the 'valid' input size {size}")
            sizes.append(size if self.padding != "valid" else (size - k) // s + 1)
        return (self.out_channels, *sizes)

    def transform(self, k):
        shape = self.out_shape(k.shape)
        fan_in = k.shape[0] * math.prod(self.kernel_size)
        stride1 = all(s == 1 for s in self.stride)
        fused = self._fused_affine(k, shape) if stride1 else None
        if fused is not None:
            return fused
        if stride1 and (
            self.padding != "circular" or _fused.enabled(k.nngp, "window_sum_circular")
        ):  # window sums, 1/Π k in the scale
            return self._affine_kernel(k, self._window_sum, fan_in, shape, scale=1.0 / math.prod(self.kernel_size))
        return self._affine_kernel(k, self._window_mean, fan_in, shape)

    def _fused_affine(self, k: Kernel, shape: tuple[int, ...]) -> Kernel | None:
        """The NTK-parameterized affine map of a stride-1 "same" or "circular" convolution as one fused pass per
        covariance (:func:`ntkit.infinite._fused.conv_affine`), or None where it does not apply (then
        :meth:`_affine_kernel` computes the same)."""
        if self.parameterization != "ntk" or isinstance(self.W_std, torch.Tensor):
            return None
        w2 = self.W_std**2 / math.prod(self.kernel_size)
        b2 = (self.b_std or 0.0) ** 2
        pair = _fused.conv_affine(k.nngp, k.ntk, self.kernel_size, self.padding, w2, b2)
        if pair is None:
            return None
        var1, var2 = (
            cached_self_map(
                self, v, lambda t: _fused.conv_affine(t, None, self.kernel_size, self.padding, w2, b2) or (None,)
            )
            for v in (k.var1, k.var2)
        )
        if var1[0] is None or (var2 is not None and var2[0] is None):
            return None
        return Kernel(pair[0], pair[1], var1[0], None if var2 is None else var2[0], shape, is_gaussian=True)

    def _window_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Σ_o K[p + o, p' + o] of a stride-1 convolution: one fused pass on the CPU (:mod:`ntkit.infinite._fused`,
        any padding), else shifted in-place sums (zero padding)."""
        fused = _fused.window_sum(t, self.kernel_size, self.padding)
        if fused is not None:
            return fused
        if self.padding == "circular":  # a tensor the fused kernel does not take (one carrying a derivative)
            return self._window_mean(t).mul_(math.prod(self.kernel_size))
        return _window_sum_stride1(t, self.kernel_size, self.padding)

    def _window_mean(self, t: torch.Tensor) -> torch.Tensor:
        """Mean over the filter window of the covariance of each pair of positions, one spatial dim at a time.

        K'[p, p'] = (1/k) Σ_i K_padded[s·p + i, s·p' + i]: the same filter offset i on both sides.
        """
        if self.padding != "circular" and all(s == 1 for s in self.stride):
            return _window_sum_stride1(t, self.kernel_size, self.padding).div_(math.prod(self.kernel_size))
        for d in range(self.spatial):
            axis = t.ndim - 2 * (self.spatial - d)  # first axis of this dimension's pair
            t = _window_mean_1d(t, axis, self.kernel_size[d], self.stride[d], self.padding)
        return t

    def make_module(self, in_shape, generator):
        cls = {1: NTKConv1d, 2: NTKConv2d}[self.spatial]
        fan_in = in_shape[0] * math.prod(self.kernel_size)
        padding, mode = ("valid", "zeros") if self.padding == "valid" else ("same", "zeros")
        if self.padding == "circular":
            mode = "circular"
        return self._make(cls, fan_in, generator, in_shape[0], self.out_channels, self.kernel_size, stride=self.stride,
                          padding=padding, padding_mode=mode)  # fmt: skip


def _tuple(value, n: int, name: str) -> tuple[int, ...]:
    values = (value,) * n if isinstance(value, int) else tuple(value)
    if len(values) != n or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{name} must be a positive int or {n} positive ints; got {value!r}")
    return values


def _window_sum_stride1(t: torch.Tensor, kernel_size: tuple[int, ...], padding: str) -> torch.Tensor:
    """The window sum (Π k times the window mean) of a stride-1 convolution with zero padding ("same" or
    "valid"), by shifted in-place sums.

    Along each pair of axes (p, p') of size L, with offsets o ∈ [−lo, hi] (lo = ⌊(k−1)/2⌋, hi = k−1−lo for
    "same", as torch pads; o ∈ [0, k−1] and output size L−k+1 for "valid"),

        S[p, p'] = Σ_o K[p + o, p' + o]       (terms whose positions fall in the zero padding are 0),

    so each offset is one ``add_`` of a shifted view into the running sum: no padded copy, no transposes, one
    new tensor per spatial dimension. The mean's 1/Π k is left to the caller.
    """
    spatial = len(kernel_size)
    for d, k in enumerate(kernel_size):
        axis = t.ndim - 2 * (spatial - d)
        size = t.shape[axis]
        if padding == "same":
            lo = (k - 1) // 2
            out = t.clone(memory_format=torch.contiguous_format)  # offset 0
            for o in range(-lo, k - lo):
                n = size - abs(o)
                if o == 0 or n <= 0:
                    continue
                dst, src = max(0, -o), max(0, o)
                out.narrow(axis, dst, n).narrow(axis + 1, dst, n).add_(t.narrow(axis, src, n).narrow(axis + 1, src, n))
        else:
            n = size - k + 1
            out = t.narrow(axis, 0, n).narrow(axis + 1, 0, n).clone(memory_format=torch.contiguous_format)
            for o in range(1, k):
                out.add_(t.narrow(axis, o, n).narrow(axis + 1, o, n))
        t = out
    return t


def _window_mean_1d(t: torch.Tensor, axis: int, k: int, stride: int, padding: str) -> torch.Tensor:
    """Window mean along the pair of axes (axis, axis + 1), padded as torch pads padding='same' (extra at the end)."""
    t = t.movedim((axis, axis + 1), (-2, -1))
    size = t.shape[-1]
    lo, hi = ((k - 1) // 2, k - 1 - (k - 1) // 2) if padding != "valid" else (0, 0)
    if padding == "circular":
        index = (torch.arange(-lo, size + hi, device=t.device) % size).to(t.device)
        t = t.index_select(-2, index).index_select(-1, index)
    elif lo or hi:
        t = torch.nn.functional.pad(t, (lo, hi, lo, hi))
    out = (t.shape[-1] - k) // stride + 1
    span = stride * (out - 1) + 1
    total = sum(t[..., i : i + span : stride, i : i + span : stride] for i in range(k))
    return (total / k).movedim((-2, -1), (axis, axis + 1))


class Conv1d(_Conv):
    """1-D convolution on (N, C, L) signals; ``padding`` is "same" | "valid" | "circular" as in torch.nn."""

    spatial = 1


class Conv2d(_Conv):
    """2-D convolution on (N, C, H, W) images; ``padding`` is "same" | "valid" | "circular" as in torch.nn."""

    spatial = 2


# ---------------------------------------------------------------------------------------------------------------
# Pooling and reshaping


class _AvgPool(Layer):
    spatial: int

    def __init__(self, kernel_size, stride=None):
        self.kernel_size = _tuple(kernel_size, self.spatial, "kernel_size")
        self.stride = self.kernel_size if stride is None else _tuple(stride, self.spatial, "stride")

    def __repr__(self) -> str:
        return f"AvgPool{self.spatial}d({self.kernel_size}, stride={self.stride})"

    def out_shape(self, in_shape):
        if len(in_shape) != self.spatial + 1:
            raise ValueError(f"{self!r} needs {self.spatial} spatial axes but gets per-example shape {in_shape}")
        sizes = []
        for size, k, s in zip(in_shape[1:], self.kernel_size, self.stride, strict=True):
            if k > size:
                raise ValueError(f"{self!r}: kernel size {k} is larger than the input size {size}")
            sizes.append((size - k) // s + 1)
        return (in_shape[0], *sizes)

    def transform(self, k):
        """K'[P, P'] = mean_{i, j} K[sP + i, sP' + j]: A K Aᵀ on each pair of axes, A the pooling matrix."""
        shape = self.out_shape(k.shape)

        def pool(t: torch.Tensor) -> torch.Tensor:
            if self.stride == self.kernel_size:
                return _pool_tiles(t, self.kernel_size)
            for d in range(self.spatial):
                axis = t.ndim - 2 * (self.spatial - d)
                a = _pooling_matrix(k.shape[1 + d], self.kernel_size[d], self.stride[d], t)
                t = torch.tensordot(t.movedim(axis, -1), a, dims=([t.ndim - 1], [1])).movedim(-1, axis)
                t = torch.tensordot(t.movedim(axis + 1, -1), a, dims=([t.ndim - 1], [1])).movedim(-1, axis + 1)
            return t

        return k.map_linear(pool, shape, layer=self)

    def make_module(self, in_shape, generator):
        cls = {1: nn.AvgPool1d, 2: nn.AvgPool2d}[self.spatial]
        return cls(self.kernel_size, stride=self.stride)


def _pool_tiles(t: torch.Tensor, kernel_size: tuple[int, ...]) -> torch.Tensor:
    """A·K·Aᵀ for non-overlapping windows (stride = kernel size): K'[P, P'] = mean_{i, j} K[kP + i, kP' + j],
    the mean over the (k × k) tile of position pairs, one pair of axes at a time (positions past ⌊L/k⌋·k are
    dropped, as torch pools).

    For k ≤ 2 the tile is summed as k² strided views added into one new tensor (the fastest on CPU); for larger
    k the pair (L, L') is pooled as the two leading window axes of ``avg_pool3d`` with kernel (k, k, 1).
    """
    lead = t.ndim - 2 * len(kernel_size)
    for d, k in enumerate(kernel_size):
        axis = lead + 2 * d
        size, out = t.shape[axis], t.shape[axis] // k
        if k > 2:
            before, after = math.prod(t.shape[:axis]), math.prod(t.shape[axis + 2 :])
            pooled = torch.nn.functional.avg_pool3d(t.reshape(before, 1, size, size, after), (k, k, 1), (k, k, 1))
            t = pooled.reshape(*t.shape[:axis], out, out, *t.shape[axis + 2 :])
            continue
        total = None
        for i in range(k):
            for j in range(k):
                view = t.narrow(axis, i, (out - 1) * k + 1).narrow(axis + 1, j, (out - 1) * k + 1)
                view = view[(slice(None),) * axis + (slice(None, None, k), slice(None, None, k))]
                total = view.clone(memory_format=torch.contiguous_format) if total is None else total.add_(view)
        t = total.div_(k * k)
    return t


def _pooling_matrix(size: int, k: int, stride: int, like: torch.Tensor) -> torch.Tensor:
    out = (size - k) // stride + 1
    a = torch.zeros(out, size, dtype=like.dtype, device=like.device)
    for p in range(out):
        a[p, p * stride : p * stride + k] = 1.0 / k
    return a


class AvgPool1d(_AvgPool):
    """Average pooling of (N, C, L) signals; ``stride`` defaults to ``kernel_size``, no padding."""

    spatial = 1


class AvgPool2d(_AvgPool):
    """Average pooling of (N, C, H, W) images; ``stride`` defaults to ``kernel_size``, no padding."""

    spatial = 2


class _GlobalAvgPool(Layer):
    spatial: int

    def __repr__(self) -> str:
        return f"GlobalAvgPool{self.spatial}d()"

    def out_shape(self, in_shape):
        if len(in_shape) != self.spatial + 1:
            raise ValueError(f"{self!r} needs {self.spatial} spatial axes but gets per-example shape {in_shape}")
        return (in_shape[0],)

    def transform(self, k):
        """K' = mean over every pair of positions of K."""
        n_pair_axes = 2 * self.spatial
        return k.map_linear(
            lambda t: t.mean(dim=tuple(range(t.ndim - n_pair_axes, t.ndim))), self.out_shape(k.shape), layer=self
        )

    def make_module(self, in_shape, generator):
        return GlobalAvgPool()


class GlobalAvgPool1d(_GlobalAvgPool):
    """Mean over the length axis: (N, C, L) → (N, C)."""

    spatial = 1


class GlobalAvgPool2d(_GlobalAvgPool):
    """Mean over both spatial axes: (N, C, H, W) → (N, C)."""

    spatial = 2


class Flatten(Layer):
    """(N, C, *S) → (N, C·|S|). The next layer's per-feature covariance is the mean over positions of the
    covariance of each position with itself: K' = mean_p K[p, p]."""

    def __repr__(self) -> str:
        return "Flatten()"

    def out_shape(self, in_shape):
        return (math.prod(in_shape),)

    def transform(self, k):
        spatial = k.spatial_dims
        if spatial == 0:
            return k

        def flatten(t: torch.Tensor) -> torch.Tensor:
            diag = spatial_diagonal(t, spatial)
            return diag.mean(dim=tuple(range(diag.ndim - spatial, diag.ndim)))

        # Features at different positions have different kernels: their mixture is no single Gaussian.
        return k.map_linear(flatten, self.out_shape(k.shape), layer=self).replace(is_gaussian=False)

    def make_module(self, in_shape, generator):
        return nn.Flatten()


def _normalized(t: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """t / norm, and 0 where the norm is 0: a feature vector that is exactly 0 (an all-zero input without bias)
    normalises to 0 in the finite network, (0 − 0)/√(0 + eps), so its kernels are exactly 0."""
    return torch.where(norm > 0, t / norm, torch.zeros((), dtype=t.dtype, device=t.device))


class LayerNorm(Layer):
    """Normalisation of each example over the channel/feature axis, at every position, without affine terms.

    At infinite width the channel mean vanishes and the channel variance is the example's own variance, so
    K'(x, x')[p, p'] = K[p, p'] / √(K(x,x)[p,p] · K(x',x')[p',p']), and Θ is divided the same way (as in
    neural-tangents). This needs Gaussian inputs: put LayerNorm after a Linear, Conv or pooling layer.
    """

    fresh = False

    def __init__(self, eps: float = 1e-5):
        self.eps = eps  # used by the finite module only; the limit is exact

    def __repr__(self) -> str:
        return "LayerNorm()"

    def transform(self, k):
        if not k.is_gaussian:
            raise ValueError("LayerNorm's infinite-width kernel needs pre-activation (Gaussian) inputs; put it "
                             "directly after a Linear, Conv or pooling layer, not after a nonlinearity")  # fmt: skip
        s = k.spatial_dims
        v1 = spatial_diagonal(k.var1, s)
        v2 = v1 if k.var2 is None else spatial_diagonal(k.var2, s)
        l12, r12 = pair_variances(v1, v2, s)
        norm12 = torch.sqrt(l12.unsqueeze(1) * r12.unsqueeze(0))
        l1, r1 = pair_variances(v1, v1, s)
        var1 = _normalized(k.var1, torch.sqrt(l1 * r1))
        var2 = None
        if k.var2 is not None:
            l2, r2 = pair_variances(v2, v2, s)
            var2 = _normalized(k.var2, torch.sqrt(l2 * r2))
        nngp = _normalized(k.nngp, norm12)
        if k.var2 is None:
            set_self_pairs(nngp, var1)
        ntk = None if k.ntk is None else _normalized(k.ntk, norm12)
        return k.replace(nngp=nngp, ntk=ntk, var1=var1, var2=var2)

    def make_module(self, in_shape, generator):
        return ChannelLayerNorm(self.eps)
