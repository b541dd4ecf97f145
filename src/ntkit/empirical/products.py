"""Empirical NTK by NTK-vector products: a vjp followed by a jvp, never forming the Jacobian of a block.

For a cotangent e_{b,j} (example b of x2, output j) the vector-Jacobian product gives the parameter-space
vector u = J(x2_b)ᵀ e_j, and the Jacobian-vector product of the x1 block along u gives

    J(x1) u = Θ(x1, x2_b)[:, :, j]        (all x1 examples, all outputs i)

so each (b, j) pair yields one column of the kernel (Novak et al., *Fast Finite Width Neural Tangent Kernel*,
ICML 2022, "NTK-vector products"; the torch.func tutorial on NTKs). Only a chunk of u vectors is alive at once,
so memory is bounded by ``chunk · P`` whatever the number of examples. The operator v ↦ Θv itself is
:func:`ntk_vector_product`.
"""

from __future__ import annotations

import torch
from torch.func import functional_call, jvp, vjp, vmap

from ntkit._validation import finite_tensor
from ntkit.empirical._common import (
    Problem,
    assemble,
    block_size_for,
    check_request,
    fixed_values,
    pair_bytes,
    vmap_or_loop,
)


def _batch_function(problem: Problem):
    """θ ↦ f(θ, x) as a pure function of the trainable parameters, outputs flattened to (N, O)."""
    model = problem.model
    fixed = fixed_values(model)
    names = list(problem.params)

    def f(flat_params: tuple[torch.Tensor, ...], x: torch.Tensor) -> torch.Tensor:
        values = {**fixed, **dict(zip(names, flat_params, strict=True))}
        return functional_call(model, values, (x,)).reshape(x.shape[0], -1)

    theta = tuple(problem.params[name].detach() for name in names)
    return f, theta


ALTERNATIVES = "method='structured' or method='jacobian_contraction' (reverse mode only)"


def forward_mode_blocker(problem: Problem) -> str | None:
    """None if forward-mode AD (``jvp``) runs through ``problem.model``, else a description of the module where it
    stops and why.

    Some kernels have no forward-mode derivative in PyTorch: ``nn.MultiheadAttention``'s fused attention
    (``_native_multi_head_attention``, SDPA) and ``nn.LSTM``/``nn.GRU`` in float32 on the CPU
    (``mkldnn_rnn_layer``). One jvp of one example along a tangent of ones finds out cheaply, before any block is
    computed. The module named is the innermost one whose forward was running when the jvp failed.
    """
    f, theta = _batch_function(problem)
    running: list[tuple[str, torch.nn.Module]] = []

    def enter(name: str, module: torch.nn.Module) -> None:
        running.append((name, module))

    def leave(module: torch.nn.Module, args, out) -> None:  # returns None: the output is left as it is
        running.pop()

    handles = []
    for name, module in problem.model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda m, args, name=name: enter(name, m)))
        handles.append(module.register_forward_hook(leave))
    try:
        with torch.enable_grad():
            jvp(lambda t: f(t, problem.x1[:1]), (theta,), (tuple(torch.ones_like(t) for t in theta),))
    except (NotImplementedError, RuntimeError) as err:
        name, module = running[-1] if running else ("", problem.model)
        where = f"module {name!r} ({type(module).__name__})" if name else f"the model ({type(module).__name__})"
        return f"{where}: {type(err).__name__}: {str(err).splitlines()[0]}"
    finally:
        for handle in handles:
            handle.remove()
    return None


def check_forward_mode(problem: Problem, what: str, instead: str = ALTERNATIVES) -> None:
    """A ValueError naming the module without forward-mode AD (see :func:`forward_mode_blocker`) and what works."""
    blocker = forward_mode_blocker(problem)
    if blocker is not None:
        raise ValueError(
            f"{what} needs forward-mode AD (jvp), which PyTorch does not implement for {blocker}; use {instead}"
        )


def _kernel_columns(problem: Problem, f, theta, x1: torch.Tensor, x2_chunk: torch.Tensor) -> torch.Tensor:
    """Θ(x1, x2_chunk) as (C, O, B1, O): for each x2 example c and its output j, the column J(x1)·J(x2_c)ᵀe_j."""
    n_out = problem.n_outputs
    basis = torch.eye(n_out, dtype=theta[0].dtype, device=theta[0].device)

    def cotangent_rows(example: torch.Tensor):
        # vjp of a single example: u_j = J(x2_c)ᵀ e_j for every output j, without touching other examples.
        _, pullback = vjp(lambda t: f(t, example.unsqueeze(0))[0], theta)
        return vmap(pullback)(basis)[0]

    def push_forward(u: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return jvp(lambda t: f(t, x1), (theta,), (u,))[1]

    with torch.enable_grad():
        rows = vmap_or_loop(cotangent_rows)(x2_chunk)  # tuple of (C, O, *param.shape)
        flat = tuple(r.reshape(-1, *r.shape[2:]) for r in rows)  # (C·O, *param.shape)
        columns = vmap_or_loop(push_forward)(flat)  # (C·O, B1, O)
    return columns.reshape(x2_chunk.shape[0], n_out, x1.shape[0], n_out)


def _columns_to_output(columns: torch.Tensor, output: str) -> torch.Tensor:
    """(C, O_j, B1, O_i) kernel columns → the requested layout for the (B1, C) block."""
    if output == "full":
        return columns.permute(2, 0, 3, 1)  # Θ[a, c, i, j]
    diagonal = torch.diagonal(columns, dim1=1, dim2=3)  # (C, B1, O): Θ[a, c, i, i]
    if output == "diagonal":
        return diagonal.transpose(0, 1)
    return diagonal.sum(-1).T  # trace; "mean" divides at the end


def _block_size(problem: Problem, n: int) -> int:
    """The largest B with B = B1 = C whose pair block fits in the memory budget.

    Alive at once: B·O parameter-sized cotangents (O·P numbers each example) and B·O forward-mode passes over B
    examples, each holding primal and tangent activations (about 3·A numbers an example, A from the probe):
    memory ≈ itemsize · O · (4·P·B + 3·A·B²), plus the pair block itself (:func:`pair_bytes` per pair).
    """
    linear, quadratic = _block_bytes(problem)
    return block_size_for(linear, n, problem.memory_budget, quadratic)


def _block_bytes(problem: Problem) -> tuple[float, float]:
    """(bytes per example, bytes per example pair) of a block: the linear and quadratic terms above."""
    o, p, a, size = problem.n_outputs, problem.n_params, problem.activation_numel, problem.itemsize
    return 4 * o * p * size, 3 * o * a * size + pair_bytes(problem)


def ntk_ntk_vector_products(problem: Problem, batch_size: int | None, progress: bool | None = None) -> torch.Tensor:
    """The empirical NTK of ``problem`` from vjp/jvp pairs, block by block."""
    f, theta = _batch_function(problem)
    n = max(problem.x1.shape[0], problem.x2.shape[0])
    block = batch_size or _block_size(problem, n)
    linear, quadratic = _block_bytes(problem)
    held = linear * block + (quadratic - pair_bytes(problem)) * block * block  # assemble adds the pair block

    def pair_block(rows: slice, cols: slice) -> torch.Tensor:
        return _columns_to_output(
            _kernel_columns(problem, f, theta, problem.x1[rows], problem.x2[cols]), problem.output
        )

    return assemble(problem, block, pair_block, progress, block_bytes=held)


def ntk_vector_product(model: torch.nn.Module, x1: torch.Tensor, x2: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Θ(x1, x2)·v for v of shape (N2, O), without forming Θ or any Jacobian: one vjp and one jvp.

    (Θ v)(x1_a)_i = Σ_{b,j} Θ(x1_a, x2_b)_{ij} v_{bj} = [J(x1) (J(x2)ᵀ v)]_{ai}.

    Returns a (N1, O) plain tensor (detached, like every kernel ntkit returns). This is the matrix-free operator
    that iterative solvers need.
    """
    problem = check_request(model, x1, x2, "ntk_vector_products", "full", None)
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"v must be a torch.Tensor of shape (N2, O); got {type(v).__name__}")
    n2 = problem.x1.shape[0] if problem.x2 is None else problem.x2.shape[0]
    if v.shape != (n2, problem.n_outputs):
        raise ValueError(f"v must have shape (N2, O) = {(n2, problem.n_outputs)}; got {tuple(v.shape)}")
    finite_tensor("v", v)
    check_forward_mode(
        problem,
        "ntk_vector_product",
        "ntkit.empirical_ntk(model, x1, x2, method='structured', output='full') contracted with v, "
        "Θv = einsum('abij,bj->ai', Θ, v)",
    )
    f, theta = _batch_function(problem)
    with torch.enable_grad():
        _, pullback = vjp(lambda t: f(t, problem.x2), theta)
        (u,) = pullback(v.detach().to(theta[0].dtype))
        return jvp(lambda t: f(t, problem.x1), (theta,), (u,))[1].detach()
