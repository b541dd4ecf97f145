"""Pieces shared by every empirical-NTK method: input checks, the output contraction, and the block driver.

Notation used throughout ``ntkit.empirical``: a model maps an example to ``O`` outputs, ``J(x)`` is the
``(O, P)`` Jacobian of those outputs with respect to the ``P`` trainable parameters, and the empirical NTK is

    Θ(x, x')_{ij} = Σ_p J(x)_{ip} J(x')_{jp}.

``output`` selects what is returned for a pair of example blocks of sizes ``B1`` and ``B2``:

* ``"full"``      (B1, B2, O, O)  Θ_{ij}
* ``"diagonal"``  (B1, B2, O)     Θ_{ii}
* ``"trace"``     (B1, B2)        Σ_i Θ_{ii}
* ``"mean"``      (B1, B2)        Σ_i Θ_{ii} / O, the kernel that converges to the infinite-width NTK.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._pytree import tree_leaves, tree_map

METHODS = ("auto", "jacobian_contraction", "ntk_vector_products", "structured")
OUTPUTS = ("mean", "trace", "full", "diagonal")

#: Bytes that the per-example intermediates of one block may take when ``batch_size`` is not given and the free
#: memory cannot be read; also the least budget. See :func:`memory_budget`.
DEFAULT_MEMORY_BUDGET = 1 << 30
MAX_MEMORY_BUDGET = 8 << 30


def memory_budget(device: torch.device) -> int:
    """Bytes one block's intermediates may take by default: a quarter of the memory free on ``device``, at least
    ``DEFAULT_MEMORY_BUDGET`` (1 GiB) and at most ``MAX_MEMORY_BUDGET`` (8 GiB).

    A fixed 1 GiB made Jacobian contraction of a 1.9M-parameter, 10-output MLP (74 MB of Jacobian per example)
    recompute column Jacobians for every block of 7 rows, 8× slower than holding them; where memory is free,
    larger blocks are the faster choice. The kernel does not depend on the block size.
    """
    free = None
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        try:
            with open("/proc/meminfo") as fh:
                fields = dict(line.split(":", 1) for line in fh)
            free = int(fields["MemAvailable"].split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            free = None
    if free is None:
        return DEFAULT_MEMORY_BUDGET
    return int(min(MAX_MEMORY_BUDGET, max(DEFAULT_MEMORY_BUDGET, free // 4)))


@dataclass(frozen=True)
class Problem:
    """A checked request: the model's trainable parameters and the shapes everything else is sized from."""

    model: nn.Module
    x1: torch.Tensor
    x2: torch.Tensor
    symmetric: bool  # x2 was omitted: compute one triangle of blocks and mirror it
    output: str
    params: dict[str, nn.Parameter]  # trainable parameters by (deduplicated) name
    n_outputs: int  # O
    activation_numel: int = 0  # numbers the leaf modules output for one example (sizes forward-mode blocks)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.params.values())

    @property
    def memory_budget(self) -> int:
        """Default bytes for one block's intermediates on this problem's device (:func:`memory_budget`)."""
        return memory_budget(self.x1.device)

    @property
    def itemsize(self) -> int:
        return next(iter(self.params.values())).element_size()


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters with ``requires_grad=True``; a tied parameter appears once, under its first name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def check_request(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None,
    method: str,
    output: str,
    batch_size: int | None,
) -> Problem:
    """Validate every argument of :func:`ntkit.empirical_ntk` and run one probe example through the model.

    Raises:
        TypeError: for arguments of the wrong type.
        ValueError: for anything else that would make the kernel undefined or silently wrong.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}; got {output!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0):
        raise ValueError(f"batch_size must be a positive int or None; got {batch_size!r}")

    params = trainable_parameters(model)
    if not params:
        raise ValueError("model has no trainable parameters (none with requires_grad=True), so its NTK is empty")
    _check_tensor("x1", x1)
    if x2 is not None:
        _check_tensor("x2", x2)
        if x2.shape[1:] != x1.shape[1:]:
            raise ValueError(
                f"x2 must have the same trailing shape as x1, {tuple(x1.shape[1:])}; got {tuple(x2.shape[1:])}"
            )
        if x2.dtype != x1.dtype:
            raise ValueError(f"x2 must have the dtype of x1, {x1.dtype}; got {x2.dtype}")
        if x2.device != x1.device:
            raise ValueError(f"x2 is on {x2.device} but x1 is on {x1.device}; put both on one device")
    _check_model_matches(model, params, x1)
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and (x.is_floating_point() or x.is_complex()) and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or Inf values; the NTK of such inputs is undefined")
    _check_per_example_mode(model)

    out, activations = probe_output(model, x1[:1], "x1", count_activations=True)
    return Problem(
        model=model,
        x1=x1.detach(),
        x2=(x1 if x2 is None else x2).detach(),
        symmetric=x2 is None,
        output=output,
        params=params,
        n_outputs=out.numel(),
        activation_numel=activations,
    )


def _check_tensor(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{name} must have a leading batch axis with at least one example; got shape {tuple(x.shape)}")


def _check_model_matches(model: nn.Module, params: dict[str, nn.Parameter], x1: torch.Tensor) -> None:
    devices = {p.device for p in params.values()}
    dtypes = {p.dtype for p in params.values()}
    if len(devices) > 1:
        raise ValueError(f"model's trainable parameters are spread over several devices {sorted(map(str, devices))}")
    if len(dtypes) > 1:
        raise ValueError(f"model's trainable parameters mix dtypes {sorted(map(str, dtypes))}; cast the model to one")
    (device,), (dtype,) = devices, dtypes
    if x1.device != device:
        raise ValueError(f"x1 is on {x1.device} but the model's parameters are on {device}; move one of them")
    if x1.is_floating_point() and x1.dtype != dtype:
        raise ValueError(
            f"x1 has dtype {x1.dtype} but the model's parameters are {dtype}; "
            f"cast one to match (for example x1.to({dtype}) or model.to({x1.dtype}))"
        )


def _check_per_example_mode(model: nn.Module) -> None:
    """A per-example NTK needs each output to depend on its own example only, deterministically."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise ValueError(
                f"model contains {type(module).__name__} {name!r} in training mode, which mixes the examples of a "
                "batch, so a per-example NTK is undefined; call model.eval() first"
            )
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.training and module.p > 0:
            raise ValueError(
                f"model contains {type(module).__name__} {name!r} in training mode, which makes the NTK random; "
                "call model.eval() first"
            )


def probe_output(model: nn.Module, x: torch.Tensor, name: str, count_activations: bool = False):
    """Run ``model`` on ``x`` and return its output flattened to (N, O), or say why the input does not fit.

    With ``count_activations`` also return how many numbers the leaf modules output for these examples (the
    activations a forward pass holds), as ``(output, count)``.
    """
    counted = [0]

    def count(module, args, out):
        if isinstance(out, torch.Tensor):
            counted[0] += out.numel()

    leaves = [m for m in model.modules() if next(m.children(), None) is None] if count_activations else []
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as err:  # any failure here means the input does not fit the model
        raise ValueError(
            f"{name} with per-example shape {tuple(x.shape[1:])} does not fit the model: calling it raised "
            f"{type(err).__name__}: {err}"
        ) from err
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"model must return a single tensor; it returned {type(out).__name__}")
    if out.ndim == 0 or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"model must keep the batch axis: {name} has {x.shape[0]} examples "
            f"but the output has shape {tuple(out.shape)}"
        )
    out = out.reshape(x.shape[0], -1)
    return (out, counted[0] // x.shape[0]) if count_activations else out


def fixed_values(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``model`` by name, detached: the values ``functional_call`` holds fixed.

    Detached so that differentiating with respect to some parameters never records a graph back to the model's
    own (``requires_grad=True``) tensors; a kernel built from them is then a plain tensor.
    """
    return {name: value.detach() for name, value in (*model.named_parameters(), *model.named_buffers())}


def vmap_or_loop(fn: Callable, in_dims=0) -> Callable:
    """``torch.func.vmap(fn, in_dims)``, or the same map as a Python loop when vmap cannot batch ``fn``.

    Some modules cannot run under vmap: ``nn.GRU`` and ``nn.LSTM``, for example, write a batched result in place
    into a hidden state they create unbatched. The loop computes exactly what vmap would, one slice at a time, so
    any model works; an error that the loop raises too is a real one and propagates.
    """
    batched = torch.func.vmap(fn, in_dims=in_dims)

    def mapped(*args):
        try:
            return batched(*args)
        except RuntimeError:
            dims = in_dims if isinstance(in_dims, tuple) else (in_dims,) * len(args)
            # an argument may be a tensor or a tuple/list/dict of tensors (a pytree), all mapped over axis d
            size = next(tree_leaves(a)[0].shape[d] for a, d in zip(args, dims, strict=True) if d is not None)

            def nth(k: int):
                return (
                    a if d is None else tree_map(lambda t, d=d: t.select(d, k), a)
                    for a, d in zip(args, dims, strict=True)
                )

            results = [fn(*nth(k)) for k in range(size)]
            return tree_map(lambda *parts: torch.stack(parts), *results)

    return mapped


def output_shape(output: str, n1: int, n2: int, n_outputs: int) -> tuple[int, ...]:
    return {
        "full": (n1, n2, n_outputs, n_outputs),
        "diagonal": (n1, n2, n_outputs),
        "trace": (n1, n2),
        "mean": (n1, n2),
    }[output]


def contract(a: torch.Tensor, b: torch.Tensor, output: str) -> torch.Tensor:
    """Contract per-example Jacobian rows ``a`` (B1, O, M) and ``b`` (B2, O, M) over M.

    Each output mode is one matrix product of its own, so "trace" and "diagonal" never build "full":

    * full:      Θ[a, b, i, j] = Σ_m A[a, i, m] B[b, j, m]   one (B1·O, M) @ (M, B2·O) product
    * diagonal:  Θ[a, b, i]    = Σ_m A[a, i, m] B[b, i, m]   O batched (B1, M) @ (M, B2) products
    * trace:     Θ[a, b]       = Σ_{i,m} A[a, i, m] B[b, i, m]   one (B1, O·M) @ (O·M, B2) product
    """
    n1, n_out, m = a.shape
    n2 = b.shape[0]
    if output == "full":
        return (a.reshape(n1 * n_out, m) @ b.reshape(n2 * n_out, m).T).reshape(n1, n_out, n2, n_out).transpose(1, 2)
    if output == "diagonal":
        return torch.bmm(a.transpose(0, 1), b.permute(1, 2, 0)).permute(1, 2, 0)
    return a.reshape(n1, n_out * m) @ b.reshape(n2, n_out * m).T  # trace; "mean" divides at the end


def block_slices(n: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def mirror(block: torch.Tensor, output: str) -> torch.Tensor:
    """Θ(x2, x1) from Θ(x1, x2): swap the example axes, and for "full" the output axes too."""
    block = block.transpose(0, 1)
    return block.transpose(2, 3) if output == "full" else block


def assemble(
    problem: Problem,
    block_size: int,
    pair_block: Callable[[slice, slice], torch.Tensor],
    progress: bool = False,
) -> torch.Tensor:
    """Fill the (N1, N2, ...) kernel block by block with ``pair_block(rows, cols)``.

    When x2 was omitted only blocks on and above the diagonal are computed; the others are mirrored, and the
    diagonal blocks are symmetrised so that the result is exactly symmetric. Each block is detached as it is
    stored, so the kernel is a plain tensor (no ``grad_fn``) and no block keeps an autograd graph alive.
    """
    n1, n2 = problem.x1.shape[0], problem.x2.shape[0]
    out = torch.empty(
        output_shape(problem.output, n1, n2, problem.n_outputs),
        dtype=_result_dtype(problem),
        device=problem.x1.device,
    )
    rows, cols = block_slices(n1, block_size), block_slices(n2, block_size)
    pairs = [(i, j) for i in range(len(rows)) for j in range(len(cols)) if not (problem.symmetric and j < i)]
    for i, j in _progress(pairs, progress):
        block = pair_block(rows[i], cols[j]).detach()
        if problem.symmetric and i == j:
            block = 0.5 * (block + mirror(block, problem.output))
        out[rows[i], cols[j]] = block
        if problem.symmetric and i != j:
            out[cols[j], rows[i]] = mirror(block, problem.output)
    if problem.output == "mean":
        out /= problem.n_outputs
    return out


def _result_dtype(problem: Problem) -> torch.dtype:
    return next(iter(problem.params.values())).dtype


def _progress(items: Sequence, enabled: bool) -> Iterator:
    if not enabled or len(items) <= 1:
        return iter(items)
    from tqdm.auto import tqdm

    return iter(tqdm(items, desc="NTK blocks", unit="block"))


def block_size_for(bytes_per_example: float, n: int, budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """The largest block whose per-example intermediates fit in ``budget`` bytes (at least 1, at most n)."""
    return int(max(1, min(n, math.floor(budget / max(bytes_per_example, 1.0)))))


class FeatureCache:
    """Per-block features (Jacobian rows, layer factors) computed once per block and reused across pairs.

    Row features are kept while their row of blocks is processed. Column features are kept for the whole
    run when ``keep_columns`` (they fit in memory), else recomputed for each pair.
    """

    def __init__(self, problem: Problem, features: Callable[[torch.Tensor], object], keep_columns: bool):
        self.problem, self.features, self.keep_columns = problem, features, keep_columns
        self._row: tuple[slice, object] | None = None
        self._cols: dict[tuple[int, int], object] = {}

    def pair(self, rows: slice, cols: slice) -> tuple[object, object]:
        if self._row is None or self._row[0] != rows:
            self._row = (rows, self.features(self.problem.x1[rows]))
        row_features = self._row[1]
        if self.problem.symmetric and rows == cols:
            return row_features, row_features
        key = (cols.start, cols.stop)
        if key in self._cols:
            return row_features, self._cols[key]
        col_features = self.features(self.problem.x2[cols])
        if self.keep_columns:
            self._cols[key] = col_features
        return row_features, col_features
