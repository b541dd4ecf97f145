"""Combinators: layers in sequence, residual connections and parallel branches."""

from __future__ import annotations

from torch import nn

from ntkit.infinite.kernel import Kernel
from ntkit.infinite.layers import Layer
from ntkit.modules import ParallelBranches, ResidualBlock

COMBINES = ("sum", "concat")


def _check_layers(layers: tuple) -> tuple[Layer, ...]:
    if not layers:
        raise ValueError("give at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"layer {i} must be an ntkit layer spec (nk.Linear, nk.ReLU, …); got {layer!r}")
    return layers


class Sequential(Layer):
    """Layers applied one after the other; the kernel passes through each layer's transform in turn."""

    def __init__(self, *layers: Layer):
        self.layers = _check_layers(layers)

    def __repr__(self) -> str:
        return "Sequential(" + ", ".join(map(repr, self.layers)) + ")"

    @property
    def fresh(self) -> bool | None:
        for layer in reversed(self.layers):
            if layer.fresh is not None:
                return layer.fresh
        return None

    def out_shape(self, in_shape):
        for i, layer in enumerate(self.layers):
            try:
                in_shape = layer.out_shape(in_shape)
            except ValueError as err:
                raise ValueError(f"layer {i} of {type(self).__name__}: {err}") from None
        return in_shape

    def transform(self, k: Kernel) -> Kernel:
        for layer in self.layers:
            k = layer.transform(k)
        return k

    def affine_layers(self) -> list[Layer]:
        return [a for layer in self.layers for a in layer.affine_layers()]

    def make_module(self, in_shape, generator):
        modules = []
        for layer in self.layers:
            modules.append(layer.make_module(in_shape, generator))
            in_shape = layer.out_shape(in_shape)
        return nn.Sequential(*modules)


class Residual(Sequential):
    """x + block(x), with ``block = Sequential(*layers)``.

    The kernels add, K' = K + K_block and Θ' = Θ + Θ_block, because the block's output is independent of x when
    it ends with a freshly drawn Linear or Conv layer (which is therefore required), as in He et al. 2016's
    residual branches and neural-tangents' FanInSum.
    """

    def __repr__(self) -> str:
        return "Residual(" + ", ".join(map(repr, self.layers)) + ")"

    fresh = False

    def out_shape(self, in_shape):
        out = super().out_shape(in_shape)
        if out != in_shape:
            raise ValueError(f"{self!r} changes the shape {in_shape} into {out}; x + block(x) needs them equal")
        if super().fresh is not True:
            raise ValueError(f"{self!r}: the block must end with a Linear or Conv layer so that its output is "
                             "independent of x; otherwise x + block(x) has no simple kernel")  # fmt: skip
        return out

    def transform(self, k: Kernel) -> Kernel:
        return _add(k, super().transform(k))

    def make_module(self, in_shape, generator):
        return ResidualBlock(super().make_module(in_shape, generator))


def _add(a: Kernel, b: Kernel) -> Kernel:
    return a.replace(
        nngp=a.nngp + b.nngp,
        ntk=None if a.ntk is None else a.ntk + b.ntk,
        var1=a.var1 + b.var1,
        var2=None if a.var2 is None else a.var2 + b.var2,
        is_gaussian=a.is_gaussian and b.is_gaussian,
    )


class Parallel(Layer):
    """Feeds the same input to every branch and sums (``combine="sum"``) or concatenates along the channel axis
    (``combine="concat"``) their outputs.

    Sum: kernels add, which needs independent branches: at most one branch may end without a fresh Linear/Conv
    layer. Concat: the per-channel kernel is the channel-weighted mean Σ_b (C_b/C) K_b, so the widths given to
    the branches matter.
    """

    def __init__(self, *branches: Layer, combine: str = "sum"):
        self.branches = _check_layers(branches)
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}; got {combine!r}")
        self.combine = combine

    def __repr__(self) -> str:
        return f"Parallel({', '.join(map(repr, self.branches))}, combine='{self.combine}')"

    @property
    def fresh(self) -> bool | None:
        return all(b.fresh is True for b in self.branches)

    def out_shape(self, in_shape):
        shapes = []
        for i, branch in enumerate(self.branches):
            try:
                shapes.append(branch.out_shape(in_shape))
            except ValueError as err:
                raise ValueError(f"branch {i} of Parallel: {err}") from None
        if self.combine == "sum":
            if len(set(shapes)) != 1:
                raise ValueError(f"Parallel(combine='sum') needs branches of one shape; got {shapes}")
            if sum(b.fresh is not True for b in self.branches) > 1:
                raise ValueError("Parallel(combine='sum'): at most one branch may end without a Linear or Conv "
                                 "layer, or the branches are correlated and their kernels do not add")  # fmt: skip
            return shapes[0]
        if len({s[1:] for s in shapes}) != 1:
            raise ValueError(f"Parallel(combine='concat') needs branches of one spatial shape; got {shapes}")
        return (sum(s[0] for s in shapes), *shapes[0][1:])

    def affine_layers(self) -> list[Layer]:
        return [a for branch in self.branches for a in branch.affine_layers()]

    def transform(self, k: Kernel) -> Kernel:
        outs = [branch.transform(k) for branch in self.branches]
        if self.combine == "sum":
            total = outs[0]
            for o in outs[1:]:
                total = _add(total, o)
            return total
        channels = sum(o.shape[0] for o in outs)
        weights = [o.shape[0] / channels for o in outs]

        def mix(attr: str):
            parts = [getattr(o, attr) for o in outs]
            if parts[0] is None:
                return None
            return sum(w * p for w, p in zip(weights, parts, strict=True))

        # A concatenation mixes channels with different kernels: no single Gaussian unless there is one branch.
        return Kernel(mix("nngp"), mix("ntk"), mix("var1"), mix("var2"), self.out_shape(k.shape),
                      is_gaussian=len(outs) == 1 and outs[0].is_gaussian)  # fmt: skip

    def make_module(self, in_shape, generator):
        return ParallelBranches([b.make_module(in_shape, generator) for b in self.branches], self.combine)
