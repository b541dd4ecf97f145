"""``ntkit.empirical_ntk``: the NTK of any finite ``torch.nn.Module``, by the method that suits its shapes."""

from __future__ import annotations

import torch
from torch import nn

from ntkit.empirical._common import Problem, check_request
from ntkit.empirical.jacobian import ntk_jacobian_contraction
from ntkit.empirical.products import check_forward_mode, forward_mode_blocker, ntk_ntk_vector_products
from ntkit.empirical.structured import (
    StructuredPlan,
    choose_strategies,
    make_plan,
    ntk_structured,
    structured_flops,
)


def empirical_ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    method: str = "auto",
    output: str = "mean",
    batch_size: int | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    r"""The empirical neural tangent kernel of ``model`` between two batches of inputs.

    .. math::  \Theta(x, x')_{ij} = \sum_p \frac{\partial f_i(x)}{\partial\theta_p}\,
               \frac{\partial f_j(x')}{\partial\theta_p}

    over the trainable parameters θ (Jacot, Gabriel & Hongler, *Neural Tangent Kernel*, NeurIPS 2018).

    Parameters
    ----------
    model:
        Any ``nn.Module`` whose output is (N, O) or (N,); other output shapes are flattened to (N, -1). Only
        parameters with ``requires_grad=True`` count; buffers are used as they are. Examples must not interact
        (BatchNorm must be in eval mode).
    x1, x2:
        Inputs (N1, ...) and (N2, ...) with the same trailing shape and dtype. ``x2=None`` means ``x1``; then only
        one triangle of blocks is computed and mirrored, and the result is exactly symmetric.
    method:
        ``"jacobian_contraction"`` (per-example Jacobians, contracted per parameter tensor),
        ``"ntk_vector_products"`` (vjp then jvp, bounded memory), ``"structured"`` (layer-wise factored,
        Novak et al. 2022; usually fastest), or ``"auto"`` (the one with the fewest multiply-adds for these
        shapes; never ``"ntk_vector_products"`` on a model without forward-mode AD, such as attention or a float32
        LSTM on the CPU).
    output:
        ``"mean"`` (N1, N2): trace / O, the kernel that converges to the infinite-width NTK (default);
        ``"trace"`` (N1, N2): Σ_i Θ_ii; ``"diagonal"`` (N1, N2, O): Θ_ii; ``"full"`` (N1, N2, O, O).
    batch_size:
        Examples per block. Bounds memory; the result does not depend on it. By default the largest block whose
        intermediates fit in a quarter of the device's free memory, between 1 and 8 GiB.
    progress:
        A tqdm bar over the blocks: None (default) shows it once the call has run for 2 s, True at once, False
        never. Work that would be one block of 128 or more examples is split into 4 row blocks while a bar may
        show, so that it has steps to count (the kernel does not depend on the blocks).

    Returns
    -------
    torch.Tensor of the dtype and device of the model's parameters: a plain tensor, never attached to an
    autograd graph.

    Raises
    ------
    TypeError, ValueError
        For bad arguments: shapes that do not fit the model, mismatched dtypes or devices, NaN/Inf inputs, no
        trainable parameters, an unknown method or output, BatchNorm or Dropout in training mode, a model whose
        examples interact (its output for an example depends on the rest of the batch), or
        ``method="ntk_vector_products"`` on a model without forward-mode AD (the message names the module).
    ntkit._validation.MemoryBudgetError
        Before anything large is allocated, when the result plus the working set exceeds the memory available;
        the message says what would fit.

    References
    ----------
    Novak, Sohl-Dickstein & Schoenholz, *Fast Finite Width Neural Tangent Kernel*, ICML 2022.

    Examples
    --------
    >>> import torch, ntkit
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
    >>> ntkit.empirical_ntk(model, torch.randn(5, 3)).shape
    torch.Size([5, 5])
    """
    problem = check_request(model, x1, x2, method, output, batch_size)
    plan = None
    if method in ("auto", "structured"):
        plan = make_plan(problem)
    if method == "auto":
        method = choose_method(problem, plan)
        if method == "ntk_vector_products" and forward_mode_blocker(problem) is not None:
            method = "structured"  # every parameter it cannot factor falls back to Jacobian contraction
    elif method == "ntk_vector_products":
        check_forward_mode(problem, "method='ntk_vector_products'")
    if method == "structured":
        return ntk_structured(problem, batch_size, progress, plan)
    if method == "jacobian_contraction":
        return ntk_jacobian_contraction(problem, batch_size, progress)
    return ntk_ntk_vector_products(problem, batch_size, progress)


def choose_method(problem: Problem, plan: StructuredPlan) -> str:
    """The method with the fewest estimated multiply-adds.

    With F the forward multiply-adds of one example, P the number of trainable parameters and O outputs:
    Jacobian contraction costs ≈ 3·O·F per example + O·P per pair (O²·P for "full"); NTK-vector products
    ≈ 2·O·F per pair; structured ≈ (1 + 2·O)·F per example + Σ_layers (K + O·C) per pair (see
    :mod:`ntkit.empirical.structured`).
    """
    if not plan.layers:
        return "jacobian_contraction"  # nothing to factor: structured would be Jacobian contraction plus overhead
    choose_strategies(plan, problem, max(problem.x1.shape[0], problem.x2.shape[0]))
    n1, n2, o = problem.x1.shape[0], problem.x2.shape[0], problem.n_outputs
    n_ex = n1 if problem.symmetric else n1 + n2
    forward = plan.forward_macs + problem.n_params
    per_pair_o = o * (o if problem.output == "full" else 1)
    costs = {
        "structured": structured_flops(plan, problem),
        "jacobian_contraction": n_ex * 3 * o * forward + n1 * n2 * per_pair_o * problem.n_params,
        "ntk_vector_products": n_ex * 3 * o * forward + n1 * n2 * 2 * o * forward,
    }
    return min(costs, key=costs.get)
