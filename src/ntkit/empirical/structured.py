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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from ntkit.empirical._common import (
    FeatureCache,
    Problem,
    assemble,
    block_size_for,
    contract,
    pair_bytes,
)
from ntkit.empirical.jacobian import contract_jacobians, per_example_jacobians
from ntkit.modules import NTKConv1d, NTKConv2d, NTKLinear

# Exact types: a subclass may change forward. The NTK* layers scale W and b by constant multipliers in forward.
FACTORED_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, NTKLinear, NTKConv1d, NTKConv2d)
_PROBE_BATCH = 3  # an odd size, so that a layer that moves the batch axis is unlikely to go unnoticed


@dataclass
class LayerPlan:
    """One factored layer: which of its parameters train, its shape, and how its pair term is contracted."""

    name: str
    module: nn.Module
    weight: bool  # the weight is trainable
    bias: bool  # a bias exists and is trainable
    positions: int  # P: positions the layer is applied at (1 for a Linear on vectors)
    fan_in: int  # K: numbers each position reads
    out_features: int  # C
    strategy: str = "dense"  # "dense" (P = 1) | "pairs" | "gradient"
    weight_multiplier: float = 1.0  # the forward pass uses weight_multiplier · W (see ntkit.modules)
    bias_multiplier: float = 1.0


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

    candidates = [(name, m) for name, m in model.named_modules() if _can_factor(m)]
    uses = _ParameterUses({id(p): m for _, m in candidates for p in (m.weight, m.bias) if p is not None})
    handles = [m.register_forward_hook(watch) for _, m in candidates]
    handles += [m.register_forward_pre_hook(uses.enter) for _, m in candidates]
    handles += [m.register_forward_hook(uses.leave) for _, m in candidates]
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
    for name, m in candidates:
        trainable = [p for p in (m.weight, m.bias) if p is not None and p.requires_grad]
        seen = calls.get(m, [])
        shared = any(owners[id(p)] > 1 or id(p) in uses.outside for p in trainable)
        if not trainable or len(seen) != 1 or shared:
            continue
        in_shape, out_shape = seen[0]
        if in_shape[0] != _PROBE_BATCH or out_shape[0] != _PROBE_BATCH or len(in_shape) < 2:
            continue  # the layer does not see examples along axis 0
        layers.append(_layer_plan(name, m, in_shape, out_shape))
        factored_ids.update(id(p) for p in trainable)
    fallback = {n: p for n, p in problem.params.items() if id(p) not in factored_ids}
    macs = sum(lp.positions * lp.fan_in * lp.out_features for lp in layers)
    return StructuredPlan(layers, fallback, macs)


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


def _can_factor(m: nn.Module) -> bool:
    if type(m) not in FACTORED_MODULES or not isinstance(m.weight, nn.Parameter):
        return False  # parametrized weights are computed, not leaves
    return isinstance(m, nn.Linear) or m.groups == 1


def _layer_plan(name: str, m: nn.Module, in_shape: torch.Size, out_shape: torch.Size) -> LayerPlan:
    weight = m.weight.requires_grad
    bias = m.bias is not None and m.bias.requires_grad
    scales = {k: float(getattr(m, k, 1.0)) for k in ("weight_multiplier", "bias_multiplier")}
    if isinstance(m, nn.Linear):
        return LayerPlan(name, m, weight, bias, math.prod(in_shape[1:-1]), m.in_features, m.out_features, **scales)
    fan_in = m.in_channels * math.prod(m.kernel_size)
    return LayerPlan(name, m, weight, bias, math.prod(out_shape[2:]), fan_in, m.out_channels, **scales)


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


def structured_flops(plan: StructuredPlan, problem: Problem) -> float:
    """Multiply-adds of the structured method, for ``method="auto"``."""
    n1, n2, o = problem.x1.shape[0], problem.x2.shape[0], problem.n_outputs
    n_ex = n1 if problem.symmetric else n1 + n2
    per_pair_o = o * (o if problem.output == "full" else 1)
    cost = n_ex * (1 + 2 * o) * plan.forward_macs
    for lp in plan.layers:
        if lp.strategy == "dense":
            cost += n1 * n2 * (lp.fan_in + per_pair_o * lp.out_features)
        elif lp.strategy == "pairs":
            cost += n1 * n2 * lp.positions**2 * (lp.fan_in + o * lp.out_features)
        else:
            cost += _gradient_cost(lp, problem, n1, n2)
    n_fallback = sum(p.numel() for p in plan.fallback.values())
    if n_fallback:
        cost += n_ex * 3 * o * (plan.forward_macs + n_fallback) + n1 * n2 * per_pair_o * n_fallback
    return float(cost)


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
            factors.append(_Dense(h[:, :, 0] if lp.weight else None, delta[..., 0], bias_sq))
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


def _inputs_and_cotangents(plan: StructuredPlan, problem: Problem, x: torch.Tensor):
    """One forward pass recording each factored layer's input h and output z, then ∂f_i/∂z for every output i."""
    records: dict[nn.Module, tuple[torch.Tensor, int, torch.Tensor]] = {}

    def record(module, args, out):
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
    """Layer input as patches (B, K, P) and cotangents as (B, O, C, P), for any factored layer (views when the
    layout allows)."""
    b, o = delta.shape[:2]
    if isinstance(lp.module, nn.Linear):
        h = h.reshape(b, -1, lp.fan_in).transpose(1, 2)
        return h, delta.reshape(b, o, -1, lp.out_features).transpose(2, 3)
    patches = _conv_patches(lp.module, h)
    if patches.shape[-1] != lp.positions:
        raise RuntimeError(f"layer {lp.name!r}: {patches.shape[-1]} patches for {lp.positions} outputs")
    return patches, delta.reshape(b, o, lp.out_features, -1)


def _conv_patches(conv: nn.Conv1d | nn.Conv2d, h: torch.Tensor) -> torch.Tensor:
    """The (B, C_in·k, P) input windows that a Conv1d/Conv2d reads, padded exactly as its forward pads them."""
    if isinstance(conv, nn.Conv1d):
        h = h.unsqueeze(2)  # a Conv1d is a Conv2d of height 1
        kernel, stride, dilation = (1, *conv.kernel_size), (1, *conv.stride), (1, *conv.dilation)
        padding = [*conv._reversed_padding_repeated_twice, 0, 0]
    else:
        kernel, stride, dilation = conv.kernel_size, conv.stride, conv.dilation
        padding = list(conv._reversed_padding_repeated_twice)
    if any(padding):
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        h = F.pad(h, padding, mode=mode)
    return F.unfold(h, kernel, dilation=dilation, stride=stride)


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
    gram = a.h @ b.h.T
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
