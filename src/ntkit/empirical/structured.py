"""Structured (layer-wise factored) empirical NTK.

For a dense layer z = W h + b, the Jacobian of output i with respect to W is the outer product δ_i hᵀ of the
layer's output cotangent δ_i = ∂f_i/∂z and its input h. Its contribution to the NTK therefore factors,

    Θ_W(x, x')_{ij} = (h · h') (δ_i · δ'_j),        Θ_b(x, x')_{ij} = δ_i · δ'_j,

and no per-example weight gradient is ever formed: the cost per pair is K + O·C instead of O·C·K
(Novak, Sohl-Dickstein & Schoenholz, *Fast Finite Width Neural Tangent Kernel*, ICML 2022, "structured
derivatives"). Layers applied at several positions p (convolutions, Linear on sequences) sum over them,

    Θ_W(x, x')_{ij} = Σ_{p,q} (h_p · h'_q) (δ_{i,p} · δ'_{j,q}),

where h_p is the input patch that position p reads. Like Novak et al. we pick, per layer, the cheaper of two
contraction orders: that position-pair sum, or first Σ_p δ_{i,p} h_pᵀ (the layer's per-example weight gradient,
which is cheaper when there are many positions and small filters, as in CNNs on images).

``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` (any stride, padding, padding mode and dilation, groups=1), each
called once per forward pass, are factored. Every other trainable parameter (norm affines, embeddings, custom
parameters, shared weights) gets exact per-parameter Jacobian contraction, so the method works on any model.

What is specific to a module type lives in one :class:`LayerHandler` per type, found in :data:`HANDLERS` by the
module's exact type: whether an instance can be factored, its (P, K, C) sizes, and how its input becomes the
(B, K, P) patches that its weight multiplies. Factoring a new layer type (attention projections, embeddings) is
one handler and one :func:`register_handler` call; everything after the patches is shared.

Readout reduction (trace and mean outputs): when the model is an ``nn.Sequential`` ending in
layer L → elementwise activations → a dense readout R (output f = m_R·W_R·φ(z_L) + b), every output's cotangent
at L is δ_i(x) = r_i ⊙ φ'(z_L(x)) with r_i = m_R·W_R[i] fixed, so

    Σ_i δ_i(x)·δ_i(x') = Σ_c s_c φ'(z_L)_c φ'(z'_L)_c = u(x)·u(x'),   s_c = Σ_i r_ic²,   u = (Σ_i r_i ⊙ δ_i)/√s,

one product of length C per pair instead of O·C (the largest term of a wide MLP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from ntkit._gemm import matmul_nt
from ntkit.empirical._common import (
    FeatureCache,
    Problem,
    assemble,
    block_size_for,
    contract,
    pair_bytes,
)
from ntkit.empirical.jacobian import contract_jacobians, per_example_jacobians
from ntkit.modules import Elementwise, NTKConv1d, NTKConv2d, NTKLinear

_PROBE_BATCH = 3  # an odd size, so that a layer that moves the batch axis is unlikely to go unnoticed


# ---------------------------------------------------------------------------------------------------------------
# One handler per module type


class LayerHandler:
    """What the structured method needs to know about one module type (exact type: a subclass may change forward).

    A handler answers three questions: can this instance be factored (:meth:`can_factor`), what are its sizes
    (:meth:`sizes`: positions P, fan-in K, outputs C from the shapes seen in a probe pass), and which input
    numbers each output position reads (:meth:`patches`: the layer input as (B, K, P)). The layer must compute
    z[:, c, p] = m_W·Σ_k W[c, k] patches[:, k, p] + m_b·b[c] with m_W, m_b its ``weight_multiplier`` and
    ``bias_multiplier`` attributes (1 when absent).
    """

    def can_factor(self, module: nn.Module) -> bool:
        return isinstance(getattr(module, "weight", None), nn.Parameter)  # parametrized weights are computed

    def sizes(self, module: nn.Module, in_shape: torch.Size, out_shape: torch.Size) -> tuple[int, int, int]:
        raise NotImplementedError

    def patches(self, lp: LayerPlan, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def cotangents(self, lp: LayerPlan, delta: torch.Tensor) -> torch.Tensor:
        """∂f_i/∂z as (B, O, C, P), from the (B, O, *z.shape[1:]) that autograd gives (channels first)."""
        return delta.reshape(*delta.shape[:2], lp.out_features, -1)


class LinearHandler(LayerHandler):
    """``nn.Linear`` on (B, *, K): every leading position p of the input is one application of W."""

    def sizes(self, module, in_shape, out_shape):
        return math.prod(in_shape[1:-1]), module.in_features, module.out_features

    def patches(self, lp, h):
        return h.reshape(h.shape[0], -1, lp.fan_in).transpose(1, 2)

    def cotangents(self, lp, delta):  # features last: (B, O, *, C) → (B, O, C, P)
        b, o = delta.shape[:2]
        return delta.reshape(b, o, -1, lp.out_features).transpose(2, 3)


class ConvHandler(LayerHandler):
    """``nn.Conv1d``/``nn.Conv2d`` with groups=1: the patches are the padded input windows (``F.unfold``)."""

    def __init__(self, spatial: int):
        self.spatial = spatial

    def can_factor(self, module):
        return super().can_factor(module) and module.groups == 1

    def sizes(self, module, in_shape, out_shape):
        return math.prod(out_shape[2:]), module.in_channels * math.prod(module.kernel_size), module.out_channels

    def patches(self, lp, h):
        """The (B, C_in·k, P) input windows that the convolution reads, padded exactly as its forward pads them."""
        conv = lp.module
        kernel, stride, dilation = conv.kernel_size, conv.stride, conv.dilation
        padding = list(conv._reversed_padding_repeated_twice)
        if self.spatial == 1:  # a Conv1d is a Conv2d of height 1
            h = h.unsqueeze(2)
            kernel, stride, dilation = (1, *kernel), (1, *stride), (1, *dilation)
            padding = [*padding, 0, 0]
        if any(padding):
            mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
            h = F.pad(h, padding, mode=mode)
        patches = F.unfold(h, kernel, dilation=dilation, stride=stride)
        if patches.shape[-1] != lp.positions:
            raise RuntimeError(f"layer {lp.name!r}: {patches.shape[-1]} patches for {lp.positions} outputs")
        return patches


_LINEAR, _CONV1D, _CONV2D = LinearHandler(), ConvHandler(1), ConvHandler(2)
#: Handlers by exact module type. The NTK* layers scale W and b by constant multipliers in forward.
HANDLERS: dict[type[nn.Module], LayerHandler] = {
    nn.Linear: _LINEAR,
    NTKLinear: _LINEAR,
    nn.Conv1d: _CONV1D,
    NTKConv1d: _CONV1D,
    nn.Conv2d: _CONV2D,
    NTKConv2d: _CONV2D,
}
#: Modules that act elementwise (the readout reduction may look through them); BatchNorm/Dropout are excluded
#: because their per-example status depends on the mode.
ELEMENTWISE_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.Softplus, nn.Identity, Elementwise,
)  # fmt: skip


def register_handler(module_type: type[nn.Module], handler: LayerHandler) -> None:
    """Factor modules of exactly ``module_type`` with ``handler`` (replacing any handler it had)."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type must be an nn.Module subclass; got {module_type!r}")
    if not isinstance(handler, LayerHandler):
        raise TypeError(f"handler must be a LayerHandler; got {type(handler).__name__}")
    HANDLERS[module_type] = handler


def handler_for(module: nn.Module) -> LayerHandler | None:
    """The handler that factors ``module``, or None (its parameters then go to the Jacobian fallback)."""
    handler = HANDLERS.get(type(module))
    return handler if handler is not None and handler.can_factor(module) else None


@dataclass
class LayerPlan:
    """One factored layer: which of its parameters train, its shape, and how its pair term is contracted."""

    name: str
    module: nn.Module
    handler: LayerHandler
    weight: bool  # the weight is trainable
    bias: bool  # a bias exists and is trainable
    positions: int  # P: positions the layer is applied at (1 for a Linear on vectors)
    fan_in: int  # K: numbers each position reads
    out_features: int  # C
    strategy: str = "dense"  # "dense" (P = 1) | "pairs" | "gradient"
    weight_multiplier: float = 1.0  # the forward pass uses weight_multiplier · W (see ntkit.modules)
    bias_multiplier: float = 1.0
    readout: nn.Module | None = field(default=None, repr=False)  # a dense readout reached elementwise (see top)


@dataclass
class StructuredPlan:
    layers: list[LayerPlan]
    fallback: dict[str, nn.Parameter]  # trainable parameters outside factored layers
    forward_macs: int  # multiply-adds of one example's forward pass through the factored layers


def make_plan(problem: Problem) -> StructuredPlan:
    """Find the layers that can be factored by watching one probe forward pass."""
    model = problem.model
    calls: dict[nn.Module, list[tuple[torch.Size, torch.Size]]] = {}

    def watch(module, args, out):
        calls.setdefault(module, []).append((args[0].shape, out.shape))

    candidates = [(name, m, h) for name, m in model.named_modules() if (h := handler_for(m)) is not None]
    uses = _ParameterUses({id(p): m for _, m, _ in candidates for p in (m.weight, m.bias) if p is not None})
    handles = [m.register_forward_hook(watch) for _, m, _ in candidates]
    handles += [m.register_forward_pre_hook(uses.enter) for _, m, _ in candidates]
    handles += [m.register_forward_hook(uses.leave) for _, m, _ in candidates]
    try:
        with torch.no_grad(), uses:
            model(problem.x1[:1].expand(_PROBE_BATCH, *problem.x1.shape[1:]))
    finally:
        for h in handles:
            h.remove()

    owners: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        owners[id(p)] = owners.get(id(p), 0) + 1

    layers, factored_ids = [], set()
    for name, m, handler in candidates:
        trainable = [p for p in (m.weight, m.bias) if p is not None and p.requires_grad]
        seen = calls.get(m, [])
        shared = any(owners[id(p)] > 1 or id(p) in uses.outside for p in trainable)
        if not trainable or len(seen) != 1 or shared:
            continue
        in_shape, out_shape = seen[0]
        if in_shape[0] != _PROBE_BATCH or out_shape[0] != _PROBE_BATCH or len(in_shape) < 2:
            continue  # the layer does not see examples along axis 0
        positions, fan_in, out_features = handler.sizes(m, in_shape, out_shape)
        layers.append(
            LayerPlan(
                name, m, handler, m.weight.requires_grad, m.bias is not None and m.bias.requires_grad,
                positions, fan_in, out_features,
                weight_multiplier=float(getattr(m, "weight_multiplier", 1.0)),
                bias_multiplier=float(getattr(m, "bias_multiplier", 1.0)),
            )
        )  # fmt: skip
        factored_ids.update(id(p) for p in trainable)
    fallback = {n: p for n, p in problem.params.items() if id(p) not in factored_ids}
    macs = sum(lp.positions * lp.fan_in * lp.out_features for lp in layers)
    plan = StructuredPlan(layers, fallback, macs)
    _find_readout(plan, model)
    return plan


def _find_readout(plan: StructuredPlan, model: nn.Module) -> None:
    """Mark the layer L of ``... → L → elementwise → readout R`` (the end of an ``nn.Sequential``), both dense
    on vectors and R the model's last module, for the readout reduction described at the top."""
    leaves = _sequential_leaves(model)
    by_module = {lp.module: lp for lp in plan.layers}
    if not leaves or leaves[-1] not in by_module:
        return
    readout = by_module[leaves[-1]]
    if readout.positions != 1 or not isinstance(readout.handler, LinearHandler):
        return
    i = len(leaves) - 2
    while i >= 0 and isinstance(leaves[i], ELEMENTWISE_MODULES):
        i -= 1
    last_hidden = by_module.get(leaves[i]) if i >= 0 else None
    if last_hidden is not None and last_hidden.positions == 1 and isinstance(last_hidden.handler, LinearHandler):
        last_hidden.readout = readout.module


def _sequential_leaves(model: nn.Module) -> list[nn.Module] | None:
    """The modules an ``nn.Sequential`` (nested ones flattened) applies in order, or None for other models."""
    if type(model) is not nn.Sequential:
        return None
    leaves = []
    for child in model:
        inner = _sequential_leaves(child)
        leaves.extend(inner if inner is not None else [child])
    return leaves


class _ParameterUses(TorchFunctionMode):
    """Records which layer parameters the probe forward pass reads outside their own layer's forward.

    The factored terms (h·h')(δ·δ') account only for a weight's use inside its layer. A parameter that the model
    also reads directly (``x @ layer.weight.T``, tied embeddings, ``+ layer.bias``) has more Jacobian than that,
    so such a layer must fall back to exact contraction. Hooks cannot see those reads; a torch-function mode
    sees every operation and the tensors it receives.
    """

    def __init__(self, owner_of: dict[int, nn.Module]):
        super().__init__()
        self.owner_of, self.inside, self.outside = owner_of, None, set()

    def enter(self, module: nn.Module, args) -> None:
        self.inside = module

    def leave(self, module: nn.Module, args, out) -> None:
        self.inside = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for value in tree_flatten((args, kwargs))[0]:
            if isinstance(value, torch.Tensor) and self.owner_of.get(id(value), self.inside) is not self.inside:
                self.outside.add(id(value))
        return func(*args, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Cost model


def choose_strategies(plan: StructuredPlan, problem: Problem, block: int) -> None:
    """Pick each multi-position layer's contraction order by its multiply-add count (and memory)."""
    n1, n2 = problem.x1.shape[0], problem.x2.shape[0]
    budget = problem.memory_budget
    for lp in plan.layers:
        if lp.positions == 1:
            lp.strategy = "dense"
            continue
        pairs_fit = 3 * block * block * lp.positions**2 * problem.itemsize <= budget
        if problem.output in ("trace", "mean") and pairs_fit:
            pairs_cost = n1 * n2 * lp.positions**2 * (lp.fan_in + problem.n_outputs * lp.out_features)
            grad_cost = _gradient_cost(lp, problem, n1, n2)
            lp.strategy = "pairs" if pairs_cost < grad_cost else "gradient"
        else:
            lp.strategy = "gradient"


def _gradient_cost(lp: LayerPlan, problem: Problem, n1: int, n2: int) -> float:
    """Forming each example's weight gradient (once per example: x1's only when x2 was omitted) and contracting
    the gradients of every pair."""
    o, width = problem.n_outputs, lp.fan_in * lp.out_features
    per_pair = o * width * (o if problem.output == "full" else 1)
    n_ex = n1 if problem.symmetric else n1 + n2
    return n_ex * o * width * lp.positions + n1 * n2 * per_pair


def structured_work(plan: StructuredPlan, problem: Problem) -> dict[str, float]:
    """Multiply-adds of the structured method by kind of work, for ``method="auto"``
    (:mod:`ntkit.empirical._costs` prices each kind at its measured throughput).

    ``"linear"``/``"conv"``: per-example forward and O backward passes through the factored layers of each type,
    (1 + 2·O)·MACs per example, plus O·MACs for a layer whose weight gradient is formed; ``"pairs"``: the pair
    contractions of the factored layers; ``"fallback_example"``/``"fallback_pairs"``: the exact Jacobian
    contraction of the parameters outside factored layers.
    """
    n1, n2, o = problem.x1.shape[0], problem.x2.shape[0], problem.n_outputs
    n_ex = n1 if problem.symmetric else n1 + n2
    per_pair_o = o * (o if problem.output == "full" else 1)
    work = dict.fromkeys(("linear", "conv", "pairs", "fallback_example", "fallback_pairs"), 0.0)
    for lp in plan.layers:
        macs = lp.positions * lp.fan_in * lp.out_features
        kind = "linear" if isinstance(lp.handler, LinearHandler) else "conv"
        work[kind] += n_ex * (1 + 2 * o) * macs
        if lp.strategy == "dense":
            work["pairs"] += n1 * n2 * (lp.fan_in + _dense_outputs(lp, problem) * lp.out_features)
        elif lp.strategy == "pairs":
            work["pairs"] += n1 * n2 * lp.positions**2 * (lp.fan_in + o * lp.out_features)
        else:
            work[kind] += n_ex * o * macs  # forming the per-example weight gradient
            work["pairs"] += _gradient_cost(lp, problem, n1, n2) - n_ex * o * macs
    n_fallback = sum(p.numel() for p in plan.fallback.values())
    if n_fallback:
        work["fallback_example"] = float(n_ex * 3 * o * (plan.forward_macs + n_fallback))
        work["fallback_pairs"] = float(n1 * n2 * per_pair_o * n_fallback)
    return work


def _dense_outputs(lp: LayerPlan, problem: Problem) -> int:
    """Output rows a dense layer's δ·δ' contracts per pair: 1 after the readout reduction, else O (O² for full)."""
    if lp.readout is not None and problem.output in ("trace", "mean"):
        return 1
    return problem.n_outputs * (problem.n_outputs if problem.output == "full" else 1)


def feature_bytes_per_example(plan: StructuredPlan, problem: Problem) -> float:
    """Memory of one example's layer factors plus the transient forward/backward tensors that make them."""
    o = problem.n_outputs
    numbers = sum(p.numel() for p in plan.fallback.values()) * o
    for lp in plan.layers:
        transient = lp.positions * (lp.fan_in + (o + 2) * lp.out_features)
        kept = {
            "dense": lp.fan_in + o * lp.out_features,
            "pairs": lp.positions * (lp.fan_in + o * lp.out_features),
            "gradient": o * lp.out_features * (lp.fan_in + 1),
        }[lp.strategy]
        numbers += transient + kept
    return float(numbers * problem.itemsize)


# ---------------------------------------------------------------------------------------------------------------
# Per-block factors


@dataclass
class _Dense:
    h: torch.Tensor | None  # (B, K) times the weight multiplier; None when the weight is frozen
    delta: torch.Tensor  # (B, O, C)
    bias: float  # the squared bias multiplier, 0 when there is no trainable bias


@dataclass
class _Pairs:
    h: torch.Tensor | None  # (B, P, K) times the weight multiplier
    delta: torch.Tensor  # (B, P, O·C)
    bias: float


def layer_factors(plan: StructuredPlan, problem: Problem, x: torch.Tensor) -> list:
    """Everything one block of examples contributes to its kernel pairs: factors of each layer, and Jacobian rows
    (B, O, M) for layers contracted by gradient and for the fallback parameters."""
    inputs, cotangents = _inputs_and_cotangents(plan, problem, x)
    factors: list = []
    for lp, h, delta in zip(plan.layers, inputs, cotangents, strict=True):
        h, delta = _positional(lp, h, delta)  # (B, K, P) and (B, O, C, P)
        if lp.weight_multiplier != 1.0:
            h = h * lp.weight_multiplier  # ∂z/∂W = weight_multiplier · δ hᵀ
        bias_sq = lp.bias_multiplier**2 if lp.bias else 0.0
        b, o, c, p = delta.shape
        if lp.strategy == "dense":
            delta = delta[..., 0]
            if lp.readout is not None and problem.output in ("trace", "mean"):
                delta = _reduce_through_readout(delta, lp.readout)
            factors.append(_Dense(h[:, :, 0] if lp.weight else None, delta, bias_sq))
        elif lp.strategy == "pairs":
            flat = delta.permute(0, 3, 1, 2).reshape(b, p, o * c)
            factors.append(_Pairs(h.transpose(1, 2) if lp.weight else None, flat, bias_sq))
        else:
            rows = []
            if lp.weight:  # the per-example weight gradient Σ_p δ_p h_pᵀ, one batched matrix product
                rows.append(torch.bmm(delta.reshape(b, o * c, p), h.transpose(1, 2)).reshape(b, o, -1))
            if lp.bias:
                rows.append(delta.sum(-1) * lp.bias_multiplier)
            factors.append(rows)
    if plan.fallback:
        factors.append(per_example_jacobians(problem.model, plan.fallback, x))
    return factors


def _reduce_through_readout(delta: torch.Tensor, readout: nn.Module) -> torch.Tensor:
    """(B, O, C) cotangents δ_i = r_i ⊙ g of the layer before a dense readout → (B, 1, C) u = (Σ_i r_i ⊙ δ_i)/√s
    with r = m_R·W_R and s = Σ_i r_i², so that u(x)·u(x') = Σ_i δ_i(x)·δ_i(x') (see the module docstring).
    Where s_c = 0 every δ_ic is 0, and so is u_c."""
    rows = readout.weight.detach() * float(getattr(readout, "weight_multiplier", 1.0))  # (O, C)
    scale = rows.square().sum(0)
    root = scale.sqrt()
    u = delta[:, 0] * rows[0]
    for i in range(1, rows.shape[0]):  # O fused multiply-adds over (B, C): no (B, O, C) temporary
        u.addcmul_(delta[:, i], rows[i])
    u = torch.where(scale > 0, u / torch.where(scale > 0, root, 1.0), 0.0)
    return u.unsqueeze(1)


def _inputs_and_cotangents(plan: StructuredPlan, problem: Problem, x: torch.Tensor):
    """One forward pass recording each factored layer's input h and output z, then ∂f_i/∂z for every output i."""
    records: dict[nn.Module, tuple[torch.Tensor, int, torch.Tensor]] = {}

    def record(module, args, out):
        fast = _linear_input_gradient(module, args[0], out)
        if fast is not None:  # the node the cotangents are taken at; its backward is the fast GEMM
            records[module] = (args[0].detach(), args[0]._version, fast)
            return fast.clone()  # later in-place ops (ReLU(inplace=True)) act on the clone, not on the node
        records[module] = (args[0].detach(), args[0]._version, out)
        return out.clone()  # later in-place ops act on the clone, so `out` stays the layer's true output

    handles = [lp.module.register_forward_hook(record) for lp in plan.layers]
    try:
        with torch.enable_grad():
            out = problem.model(x).reshape(x.shape[0], -1)
    finally:
        for h in handles:
            h.remove()
    for lp in plan.layers:
        h, version, _ = records[lp.module]
        if h._version != version:
            raise RuntimeError(
                f"the input of layer {lp.name!r} was modified in place after the layer used it; "
                "use method='jacobian_contraction' for this model"
            )
    zs = [records[lp.module][2] for lp in plan.layers]
    if not zs:
        return [], []
    return [records[lp.module][0] for lp in plan.layers], _output_cotangents(out, zs)


class _LinearInputGradient(torch.autograd.Function):
    """z = x·Wᵀ + b as computed by the layer (passed in, detached), with the backward ∂L/∂x = (∂L/∂z)·W through
    :func:`ntkit._gemm.matmul_nt`: the O backward passes of :func:`_output_cotangents` are mostly these products,
    and autograd's own ``mm`` takes torch's default GEMM (MKL's slow path on AMD: 113 against 201 GFLOP/s for
    oneDNN in float32 on the EPYC). No weight gradient is ever asked for here."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, z: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight_t)
        return z.view_as(z)  # no copy: the caller hands later layers a clone

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weight_t,) = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            flat = grad.reshape(-1, grad.shape[-1])
            grad_x = matmul_nt(flat, weight_t).reshape(*grad.shape[:-1], weight_t.shape[0])
        return grad_x, None, None


def _linear_input_gradient(module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor | None:
    """The layer's output z as a :class:`_LinearInputGradient` node, for an ``nn.Linear`` (or NTKLinear, whose
    effective weight is weight_multiplier·W) whose input needs a gradient; None otherwise (autograd's own path)."""
    if (
        type(module) not in (nn.Linear, NTKLinear)
        or not x.requires_grad
        or x.dtype not in (torch.float32, torch.float64)
    ):
        return None
    weight = module.weight.detach()
    if isinstance(module, NTKLinear):
        weight = weight * module.weight_multiplier
    return _LinearInputGradient.apply(x, out.detach(), weight.t().contiguous())


def _output_cotangents(out: torch.Tensor, zs: list[torch.Tensor]) -> list[torch.Tensor]:
    """δ_i = ∂f_i/∂z for each output unit i and every example, as (B, O, *z.shape[1:]) per layer.

    Examples are independent, so the cotangent e_i placed on every example gives each example's own δ_i: O
    backward passes in all, each computing input gradients only (no weight gradients). A plain loop measured
    faster than ``is_grads_batched`` on CPU convolutions, and it writes straight into the final layout.
    """
    n, o = out.shape
    # Every entry is written below (a gradient, or zeros where the output does not use the layer), so the
    # buffers start uninitialised (zero-filling them showed up as ~8% of a large MLP's profile).
    deltas = [torch.empty((n, o, *z.shape[1:]), dtype=z.dtype, device=z.device) for z in zs]
    cotangent = torch.zeros_like(out)
    for i in range(o):
        cotangent.zero_()
        cotangent[:, i] = 1
        grads = torch.autograd.grad(out, zs, grad_outputs=cotangent, retain_graph=i < o - 1, allow_unused=True)
        for delta, g in zip(deltas, grads, strict=True):
            if g is None:  # the output does not depend on this layer
                delta[:, i] = 0
            else:
                delta[:, i] = g
    return deltas


def _positional(lp: LayerPlan, h: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer input as patches (B, K, P) and cotangents as (B, O, C, P), by the layer's handler."""
    return lp.handler.patches(lp, h), lp.handler.cotangents(lp, delta)


# ---------------------------------------------------------------------------------------------------------------
# Pair contraction


def contract_factors(fa: list, fb: list, output: str) -> torch.Tensor:
    """Σ over layers of each layer's kernel term between two blocks of factors."""
    total = None
    for a, b in zip(fa, fb, strict=True):
        if isinstance(a, _Dense):
            term = _dense_term(a, b, output)
        elif isinstance(a, _Pairs):
            term = _pairs_term(a, b)
        else:
            term = contract_jacobians(a, b, output)
        total = term if total is None else total + term
    return total


def _dense_term(a: _Dense, b: _Dense, output: str) -> torch.Tensor:
    """(h·h' + β²) ⊙ (δ_i·δ'_j), the input Gram broadcast over the output axes (β the bias multiplier)."""
    d = contract(a.delta, b.delta, output)
    if a.h is None:
        return a.bias * d
    gram = matmul_nt(a.h, b.h)
    if a.bias:
        gram = gram + a.bias
    return gram.reshape(*gram.shape, *([1] * (d.ndim - 2))) * d


def _pairs_term(a: _Pairs, b: _Pairs) -> torch.Tensor:
    """Σ_{p,q} (h_p·h'_q + β²) (Σ_i δ_{i,p}·δ'_{i,q}): the trace over outputs, position pair by pair."""
    d = torch.einsum("apm,bqm->abpq", a.delta, b.delta)
    if a.h is None:
        return a.bias * d.sum((2, 3))
    gram = torch.einsum("apk,bqk->abpq", a.h, b.h)
    if a.bias:
        gram += a.bias
    return torch.einsum("abpq,abpq->ab", gram, d)


def ntk_structured(
    problem: Problem, batch_size: int | None, progress: bool | None = None, plan: StructuredPlan | None = None
) -> torch.Tensor:
    """The empirical NTK of ``problem`` from layer-wise factors, block by block."""
    plan = plan or make_plan(problem)
    n = max(problem.x1.shape[0], problem.x2.shape[0])
    choose_strategies(plan, problem, batch_size or n)
    per_example = feature_bytes_per_example(plan, problem)
    budget = problem.memory_budget
    block = batch_size or block_size_for(2 * per_example, n, budget, pair_bytes(problem))
    if batch_size is None and block < n:
        choose_strategies(plan, problem, block)  # the pair-memory check depends on the block size
    keep_columns = per_example * problem.x2.shape[0] <= budget
    held = per_example * (block + (problem.x2.shape[0] if keep_columns else block))
    cache = FeatureCache(problem, lambda x: layer_factors(plan, problem, x), keep_columns)

    def pair_block(rows: slice, cols: slice) -> torch.Tensor:
        fa, fb = cache.pair(rows, cols)
        return contract_factors(fa, fb, problem.output)

    return assemble(problem, block, pair_block, progress, block_bytes=held)
