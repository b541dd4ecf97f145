"""Empirical NTK by Jacobian contraction.

Each example's Jacobian J(x) = ∂f(x)/∂θ, of shape (O, P), is formed with ``torch.func`` (``vmap`` over
examples of ``jacrev``), and the kernel is contracted one parameter tensor at a time:

    Θ(x, x') = Σ_{tensors w} J_w(x) J_w(x')ᵀ.

This is the "Jacobian contraction" of Novak, Sohl-Dickstein & Schoenholz, *Fast Finite Width Neural Tangent
Kernel*, ICML 2022. Its cost is about N·O backward passes plus N1·N2·O·P multiply-adds for the contraction, and
its memory is O·P numbers per example, so blocks are sized to keep that bounded.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, jacrev

from ntkit.empirical._common import (
    FeatureCache,
    Problem,
    assemble,
    block_size_for,
    contract,
    fixed_values,
    pair_bytes,
    vmap_or_loop,
)


def per_example_jacobians(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """Jacobian rows of each example with respect to ``params`` only, one (B, O, numel) tensor per parameter.

    Every other parameter and buffer of ``model`` is held fixed at its current value (detached, so that no
    autograd graph reaches the model's own parameters and the rows come back plain). Examples are treated one at
    a time (vmap over single-example calls), so the model sees batches of one.
    """
    fixed = fixed_values(model)
    names = list(params)

    def single_example_output(flat_params: tuple[torch.Tensor, ...], example: torch.Tensor) -> torch.Tensor:
        values = {**fixed, **dict(zip(names, flat_params, strict=True))}
        return functional_call(model, values, (example.unsqueeze(0),)).reshape(-1)

    values = tuple(params[name].detach() for name in names)
    with torch.enable_grad():
        jac = vmap_or_loop(jacrev(single_example_output), in_dims=(None, 0))(values, x)
    return [j.reshape(x.shape[0], j.shape[1], -1) for j in jac]


def contract_jacobians(a: list[torch.Tensor], b: list[torch.Tensor], output: str) -> torch.Tensor:
    """Σ over parameter tensors of :func:`ntkit.empirical._common.contract`."""
    total = contract(a[0], b[0], output)
    for ja, jb in zip(a[1:], b[1:], strict=True):
        total = total + contract(ja, jb, output)
    return total


def jacobian_bytes_per_example(problem: Problem) -> float:
    """Memory of one example's Jacobian rows (O·P numbers), the quantity that bounds the block size."""
    return float(problem.n_outputs * problem.n_params * problem.itemsize)


def ntk_jacobian_contraction(problem: Problem, batch_size: int | None, progress: bool | None = None) -> torch.Tensor:
    """The empirical NTK of ``problem`` by per-example Jacobians, contracted block by block."""
    n = max(problem.x1.shape[0], problem.x2.shape[0])
    per_example = jacobian_bytes_per_example(problem)
    budget = problem.memory_budget
    # a row and a column block of Jacobians are alive, and the pair block they make
    block = batch_size or block_size_for(2 * per_example, n, budget, pair_bytes(problem))
    keep_columns = per_example * problem.x2.shape[0] <= budget
    held = per_example * (block + (problem.x2.shape[0] if keep_columns else block))
    cache = FeatureCache(problem, lambda x: per_example_jacobians(problem.model, problem.params, x), keep_columns)

    def pair_block(rows: slice, cols: slice) -> torch.Tensor:
        ja, jb = cache.pair(rows, cols)
        return contract_jacobians(ja, jb, problem.output)

    return assemble(problem, block, pair_block, progress, block_bytes=held)
