"""A torch model's own infinite-width limit: trace it with ``torch.fx`` and map every operation to a layer spec.

The widths come from the model; the weight and bias scales come from the arguments or from the model's own
initial parameters, per layer. The spec's ``kernel`` is then the NNGP and NTK that the model's family (the same
architecture with fresh random weights) tends to as its widths grow, and its ``build`` makes a fresh member.
"""

from __future__ import annotations

import math
import operator
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from ntkit._validation import one_of, optional_real_number
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
    Layer,
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
from ntkit.infinite.activations import Activation
from ntkit.infinite.attention import SelfAttentionModule
from ntkit.modules import ChannelLayerNorm, NTKConv1d, NTKConv2d, NTKLinear
from ntkit.modules import Elementwise as ElementwiseModule
from ntkit.modules import GlobalAvgPool as GlobalAvgPoolModule

PARAMETERIZATIONS = ("standard", "ntk")

#: Elementwise torch modules without a closed form here: their kernels come by Gauss-Hermite quadrature.
QUADRATURE_MODULES = (nn.Sigmoid, nn.SiLU, nn.ELU, nn.Softplus, nn.Mish, nn.Softsign, nn.SELU, nn.CELU)
#: Elementwise functions and tensor methods that a traced forward may call.
FUNCTIONS = {
    torch.relu: ReLU, F.relu: ReLU, torch.tanh: Tanh, F.tanh: Tanh, F.gelu: GELU, torch.erf: Erf, torch.sin: Sin,
    torch.sigmoid: lambda: Elementwise(torch.sigmoid, name="sigmoid"), F.silu: lambda: Elementwise(F.silu, name="silu"),
}  # fmt: skip
METHODS = {"relu": ReLU, "tanh": Tanh, "erf": Erf, "sin": Sin,
           "sigmoid": lambda: Elementwise(torch.sigmoid, name="sigmoid")}  # fmt: skip
ADDS = (operator.add, torch.add, operator.iadd)
CATS = (torch.cat, torch.concat)
FLATTENS = (torch.flatten,)


def from_torch(model: nn.Module, W_std: float | None = None, b_std: float | None = None,
               parameterization: str = "standard") -> Layer:  # fmt: skip
    r"""The layer spec of a torch model: its infinite-width NNGP/NTK and fresh finite copies.

    The model is traced with ``torch.fx`` (its forward must not branch on data) and each operation becomes a
    spec: ``nn.Linear`` → :class:`~ntkit.Linear`, ``nn.Conv1d/2d`` (stride 1 with padding "same"/"valid"/circular,
    or any stride with padding 0) → Conv, ``nn.ReLU``, ``nn.GELU``, ``nn.Tanh``, ``nn.LeakyReLU`` and
    torch.relu/tanh/erf/sin/gelu → their closed forms, ``nn.Sigmoid``, ``nn.SiLU``, ``nn.ELU``, ``nn.Softplus``, …
    → :class:`~ntkit.Elementwise` (quadrature), ``nn.AvgPool1d/2d`` (no padding), ``nn.AdaptiveAvgPool1d/2d(1)``
    → GlobalAvgPool, ``nn.Flatten``/``torch.flatten(x, 1)`` → Flatten, ``nn.LayerNorm`` over the last (feature)
    axis of (N, D) inputs → LayerNorm, ``a + b`` → :class:`~ntkit.Residual` (when one side is the other's input)
    or ``Parallel(combine="sum")``, ``torch.cat(..., dim=1)`` → ``Parallel(combine="concat")``, and ntkit's own
    modules (``arch.build``, ``SelfAttention`` included) → the specs they came from. ``nn.MultiheadAttention`` is
    refused with the reason: its 1/√d_k scores have no closed-form limit (use ``nk.monte_carlo_kernel``).

    **Scales.** A Linear/Conv layer's spec gets W_std = std(W)·√fan_in and b_std = std(b), where std is the root
    mean square of the model's *current* parameters (their distribution has mean 0 at initialisation), unless the
    arguments fix them for every layer. PyTorch's default init is ``kaiming_uniform_(W, a=√5)``: gain
    √(2/(1 + a²)) = 1/√3 and bound gain·√(3/fan_in) = 1/√fan_in, so W ~ U(−1/√fan_in, 1/√fan_in), whose variance
    is bound²/3, i.e. std(W) = 1/√(3·fan_in) and **W_std = 1/√3 ≈ 0.577**; the bias is U(−1/√fan_in, 1/√fan_in),
    so **b_std = 1/√(3·fan_in)**, which depends on the layer's fan-in and vanishes as the width grows. Uniform
    and Gaussian weights of the same variance have the same infinite-width limit (central limit theorem).
    ntkit's own NTK-parameterized modules keep their scales in ``weight_multiplier``/``bias_multiplier``, which
    are read exactly: W_std = weight_multiplier·√fan_in, b_std = bias_multiplier.

    **Parameterization.** ``"standard"`` (plain torch layers: the parameters are the weights, the NTK grows with
    the widths) or ``"ntk"`` (the same network written as z = (W_std/√fan_in)·W x + b_std·b with W, b ~ N(0, 1):
    the same NNGP, a width-independent NTK). ntkit's own modules keep the parameterization they were built with.

    Parameters
    ----------
    model : torch.nn.Module
        A model whose forward torch.fx can trace, on (N, D), (N, C, L) or (N, C, H, W) inputs.
    W_std, b_std : float or None
        Scales for every Linear/Conv layer; None reads them from the model per layer (see above).
    parameterization : {"standard", "ntk"}

    Returns
    -------
    ntkit.Sequential
        ``spec.kernel(x1, x2)`` gives the NNGP and NTK; ``spec.build(in_shape, seed)`` a fresh finite copy.

    Raises
    ------
    TypeError
        ``model`` is not an ``nn.Module``.
    ValueError
        The model cannot be traced (data-dependent control flow; the message says what to do instead), or it
        holds operations with no infinite-width spec: one error lists every such module by qualified name and
        type, and every such function.

    References
    ----------
    Reed et al., *torch.fx: Practical Program Capture and Transformation for Deep Learning in Python*, MLSys 2022;
    Sohl-Dickstein et al., *On the infinite width limit of neural networks with a standard parameterization*,
    2020; He et al., *Delving Deep into Rectifiers*, ICCV 2015 (the kaiming init).

    Examples
    --------
    >>> import torch, ntkit as nk
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))
    >>> spec = nk.from_torch(model)
    >>> spec.kernel(torch.randn(4, 3, dtype=torch.float64)).ntk.shape
    torch.Size([4, 4])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    one_of("parameterization", parameterization, PARAMETERIZATIONS)
    scales = _Scales(optional_real_number("W_std", W_std, positive=True),
                     optional_real_number("b_std", b_std, nonnegative=True), parameterization)  # fmt: skip
    if isinstance(model, _Tracer.LEAVES) or not list(model.children()):  # fx traces the root's own forward
        model = nn.Sequential(model)
    graph = _trace(model)
    modules = dict(model.named_modules())
    return _GraphToSpec(graph, modules, scales).convert()


@dataclass
class _Scales:
    W_std: float | None
    b_std: float | None
    parameterization: str


def _trace(model: nn.Module) -> fx.Graph:
    try:
        return _Tracer().trace(model)
    except Exception as err:  # fx raises TraceError, TypeError, RuntimeError … depending on what it met
        raise ValueError(
            f"from_torch could not trace {type(model).__name__} with torch.fx: {type(err).__name__}: {err}. "
            "torch.fx records the forward once with symbolic inputs, so a forward whose control flow depends on "
            "the data (`if x.sum() > 0:`, a loop over x's values, x.shape used in Python arithmetic on a branch) "
            "has no single graph, and neither has an infinite-width limit as one architecture. What to do: "
            "write the branch without Python control flow (torch.where), trace the traceable part "
            "(from_torch(model.features)), or describe the architecture with ntkit specs "
            "(nk.Sequential(nk.Linear(...), nk.ReLU(), ...))"
        ) from err


class _Tracer(fx.Tracer):
    """torch.fx's tracer, keeping Linear/Conv subclasses (ntkit's NTKLinear, …) and ntkit's own elementwise,
    normalisation and pooling modules as leaves so that their scales and specs can be read."""

    LEAVES = (
        nn.Linear,
        nn.Conv1d,
        nn.Conv2d,
        ElementwiseModule,
        ChannelLayerNorm,
        GlobalAvgPoolModule,
        SelfAttentionModule,
    )

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, self.LEAVES) or super().is_leaf_module(m, module_qualified_name)


# ---------------------------------------------------------------------------------------------------------------
# One module or function → one spec


def _rms(t: torch.Tensor) -> float:
    return float(t.detach().double().pow(2).mean().sqrt())


def _affine_scales(module: nn.Module, fan_in: int, scales: _Scales) -> dict:
    """W_std, b_std and parameterization of a Linear/Conv module's spec."""
    has_bias = module.bias is not None
    own = getattr(module, "parameterization", "ntk")
    if isinstance(module, (NTKLinear, NTKConv1d, NTKConv2d)) and own == "ntk":
        w = module.weight_multiplier * math.sqrt(fan_in) if scales.W_std is None else scales.W_std
        b = (module.bias_multiplier if has_bias else 0.0) if scales.b_std is None else scales.b_std
        return {"W_std": w, "b_std": b, "parameterization": "ntk"}
    w = _rms(module.weight) * math.sqrt(fan_in) if scales.W_std is None else scales.W_std
    if not has_bias:
        b = None if scales.parameterization == "standard" else 0.0
    else:
        b = _rms(module.bias) if scales.b_std is None else scales.b_std
    if w <= 0:
        raise ValueError(f"{type(module).__name__} has all-zero weights: W_std would be 0; pass W_std=")
    return {"W_std": w, "b_std": b, "parameterization": scales.parameterization}


def _conv_padding(module: nn.Module) -> str | None:
    """ntkit's padding name for a torch conv, or None when there is none."""
    k, pad, stride = module.kernel_size, module.padding, module.stride
    if module.padding_mode not in ("zeros", "circular"):
        return None
    if pad == "valid" or (not isinstance(pad, str) and all(p == 0 for p in pad)):
        return "valid" if module.padding_mode == "zeros" or pad == "valid" else None
    symmetric = not isinstance(pad, str) and all(2 * p == s - 1 for p, s in zip(pad, k, strict=True))
    if (pad == "same" or symmetric) and all(s == 1 for s in stride):
        return "circular" if module.padding_mode == "circular" else "same"
    return None


def _module_spec(module: nn.Module, scales: _Scales) -> Layer | str:
    """The spec of one leaf module, or a string saying why there is none."""
    if isinstance(module, nn.Linear):
        return Linear(module.out_features, **_affine_scales(module, module.in_features, scales))
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if module.dilation != (1,) * len(module.kernel_size) or module.groups != 1:
            return "dilation and groups must be 1"
        padding = _conv_padding(module)
        if padding is None:
            return "padding must be 0 or 'valid' (any stride), or 'same'/(k − 1)/2 with stride 1 (zeros or circular)"
        cls = Conv1d if isinstance(module, nn.Conv1d) else Conv2d
        fan_in = module.in_channels * math.prod(module.kernel_size)
        return cls(module.out_channels, module.kernel_size, module.stride, padding,
                   **_affine_scales(module, fan_in, scales))  # fmt: skip
    simple = {nn.ReLU: ReLU, nn.Tanh: Tanh, nn.Identity: Identity}
    if type(module) in simple:
        return simple[type(module)]()
    if isinstance(module, nn.GELU):
        return GELU() if module.approximate == "none" else Elementwise(module, name="GELU(tanh)")
    if isinstance(module, nn.LeakyReLU):
        return LeakyReLU(module.negative_slope)
    if isinstance(module, QUADRATURE_MODULES):
        return Elementwise(module, name=type(module).__name__)
    if isinstance(module, ElementwiseModule):  # ntkit's own: fn is the bound method of the spec that built it
        owner = getattr(module.fn, "__self__", None)
        return owner if isinstance(owner, Activation) else Elementwise(module.fn, name=module.name)
    if isinstance(module, ChannelLayerNorm):
        return LayerNorm(module.eps)
    if isinstance(module, nn.LayerNorm):
        return _layer_norm(module)
    if isinstance(module, GlobalAvgPoolModule):
        return AnyGlobalAvgPool()
    if isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
        size = module.output_size
        if any(s != 1 for s in ((size,) if isinstance(size, int) else size)):
            return "only output_size=1 (global average pooling) has a spec"
        return GlobalAvgPool1d() if isinstance(module, nn.AdaptiveAvgPool1d) else GlobalAvgPool2d()
    if isinstance(module, (nn.AvgPool1d, nn.AvgPool2d)):
        padding = module.padding if isinstance(module.padding, tuple) else (module.padding,)
        if any(padding) or module.ceil_mode:
            return "padding must be 0 and ceil_mode False"
        cls = AvgPool1d if isinstance(module, nn.AvgPool1d) else AvgPool2d
        return cls(module.kernel_size, module.stride)
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            return "only Flatten(start_dim=1, end_dim=-1) has a spec"
        return Flatten()
    if isinstance(module, SelfAttentionModule):  # ntkit's own (arch.build): the spec it was built from
        return module.spec
    if isinstance(module, nn.MultiheadAttention):
        return (
            "torch's attention scores are scaled by 1/√d_k with separate query and key weights, whose infinite-"
            "width limit has no closed-form kernel (Hron et al. 2020); use nk.SelfAttention (scaling='linear', "
            "(N, C, L) layout) for the closed form, or nk.monte_carlo_kernel for this model"
        )
    return "no infinite-width spec for this module"


def _layer_norm(module: nn.LayerNorm) -> Layer | str:
    if len(module.normalized_shape) != 1:
        return "only LayerNorm over the last axis of (N, D) features has a spec"
    if module.elementwise_affine:
        warnings.warn(
            "nn.LayerNorm with elementwise_affine: its gain and bias are 1 and 0 at initialisation, so the NNGP is "
            "exact, but the NTK leaves out their gradients (ntkit's LayerNorm has no affine parameters); use "
            "elementwise_affine=False for an exact NTK",
            stacklevel=4,
        )
    return LayerNorm(module.eps)


class AnyGlobalAvgPool(Layer):
    """Mean over every spatial axis, however many there are (the spec of ntkit's ``GlobalAvgPool`` module)."""

    def __repr__(self) -> str:
        return "GlobalAvgPool()"

    @staticmethod
    def _spec(spatial: int) -> Layer:
        if spatial not in (1, 2):
            raise ValueError(f"global average pooling needs 1 or 2 spatial axes; got {spatial}")
        return (GlobalAvgPool1d if spatial == 1 else GlobalAvgPool2d)()

    def out_shape(self, in_shape):
        return self._spec(len(in_shape) - 1).out_shape(in_shape)

    def transform(self, k):
        return self._spec(k.spatial_dims).transform(k)

    def make_module(self, in_shape, generator):
        return GlobalAvgPoolModule()


# ---------------------------------------------------------------------------------------------------------------
# The graph → nested specs


@dataclass
class _Chain:
    """A value written as ``Sequential(*layers)`` applied to the value of node ``anchor``."""

    anchor: fx.Node
    layers: list = field(default_factory=list)


class _GraphToSpec:
    """Walks the traced graph in order. Each value is a chain of specs from an anchor: the input, or a node whose
    value several others use (a fork). Where two chains meet (``+``, ``torch.cat``) both are rewritten from their
    latest common anchor and become the branches of a Residual or Parallel."""

    def __init__(self, graph: fx.Graph, modules: dict[str, nn.Module], scales: _Scales):
        self.graph, self.modules, self.scales = graph, modules, scales
        self.order = {node: i for i, node in enumerate(graph.nodes)}
        self.chains: dict[fx.Node, _Chain] = {}
        self.unsupported: list[str] = []
        self.input: fx.Node | None = None

    def convert(self) -> Layer:
        inputs = [n for n in self.graph.nodes if n.op == "placeholder"]
        if len(inputs) != 1:
            raise ValueError(f"from_torch needs a model with one input; its forward takes {len(inputs)}")
        result = None
        for node in self.graph.nodes:
            if node.op == "placeholder":
                self.chains[node] = _Chain(node)
                self.input = node
            elif node.op == "output":
                result = node.args[0]
            else:
                self.chains[node] = self._node(node)
        if self.unsupported:
            raise ValueError(f"from_torch: {len(self.unsupported)} operation(s) of the model have no infinite-width "
                             "spec: " + "; ".join(self.unsupported))  # fmt: skip
        if not isinstance(result, fx.Node):
            raise ValueError("from_torch needs a model that returns one tensor")
        chain = self._rebase(self._ref(result), inputs[0])
        if not chain.layers:
            raise ValueError("the model returns its input unchanged: there is no layer to map")
        return Sequential(*chain.layers)

    # -- chains

    def _ref(self, node: fx.Node) -> _Chain:
        """How a user of ``node`` sees its value: from ``node`` itself when it is a fork, else its chain."""
        if len(node.users) > 1:
            return _Chain(node)
        chain = self.chains[node]
        return _Chain(chain.anchor, list(chain.layers))

    def _unfold(self, chain: _Chain) -> _Chain:
        """The same value written from the anchor's own anchor."""
        base = self.chains[chain.anchor]
        return _Chain(base.anchor, base.layers + chain.layers)

    def _rebase(self, chain: _Chain, anchor: fx.Node) -> _Chain:
        while chain.anchor is not anchor:
            chain = self._unfold(chain)
        return chain

    def _meet(self, chains: list[_Chain]) -> list[_Chain]:
        """The chains rewritten from their latest common anchor."""
        while len({c.anchor for c in chains}) > 1:
            latest = max(chains, key=lambda c: self.order[c.anchor])
            chains = [self._unfold(c) if c.anchor is latest.anchor else c for c in chains]
        return chains

    def _skip(self, node: fx.Node, why: str) -> _Chain:
        """Record an unsupported node and pass its first input through, so that the walk can list them all."""
        self.unsupported.append(why)
        source = next((a for a in node.args if isinstance(a, fx.Node)), None)
        return self._ref(source) if source is not None else _Chain(self.input)

    def _extend(self, node: fx.Node, layer: Layer | str, what: str) -> _Chain:
        source = node.args[0] if node.args else None
        if not isinstance(source, fx.Node):
            return self._skip(node, f"{what}: no tensor input")
        chain = self._ref(source)
        if isinstance(layer, str):
            self.unsupported.append(f"{what} ({layer})")
            return chain
        if not isinstance(layer, Identity):
            chain.layers.append(layer)
        return chain

    # -- nodes

    def _node(self, node: fx.Node) -> _Chain:
        if node.op == "call_module":
            module = self.modules[node.target]
            return self._extend(node, _module_spec(module, self.scales), f"{node.target}: {type(module).__name__}")
        if node.op == "call_function" and node.target in ADDS:
            return self._combine(node, list(node.args[:2]), "sum")
        if node.op == "call_function" and node.target in CATS:
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            if dim != 1:
                return self._skip(node, f"{node.name}: torch.cat (along dim {dim}; only the channel axis, dim=1)")
            return self._combine(node, list(node.args[0]), "concat")
        if node.op == "call_function" and node.target in FUNCTIONS:
            return self._extend(node, FUNCTIONS[node.target](), f"{node.name}: {node.target.__name__}")
        if node.op == "call_method" and node.target in METHODS:
            return self._extend(node, METHODS[node.target](), f"{node.name}: Tensor.{node.target}")
        if (node.op == "call_function" and node.target in FLATTENS) or (
            node.op == "call_method" and node.target == "flatten"
        ):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            layer = Flatten() if start == 1 and len(node.args) < 3 else "only flatten(x, 1) has a spec"
            return self._extend(node, layer, f"{node.name}: flatten")
        what = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", repr(node.target))
        return self._skip(node, f"{node.name}: {what} ({node.op} with no infinite-width spec)")

    def _combine(self, node: fx.Node, parts: list, combine: str) -> _Chain:
        if len(parts) < 2 or not all(isinstance(p, fx.Node) for p in parts):
            return self._skip(node, f"{node.name}: {'+' if combine == 'sum' else 'torch.cat'} (with a constant)")
        chains = self._meet([self._ref(p) for p in parts])
        anchor = chains[0].anchor
        if combine == "sum" and len(chains) == 2 and any(not c.layers for c in chains):
            block = next(c for c in chains if c.layers)
            return _Chain(anchor, [Residual(*block.layers)])
        branches = [Sequential(*c.layers) if c.layers else Identity() for c in chains]
        return _Chain(anchor, [Parallel(*branches, combine=combine)])
