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
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._pytree import tree_leaves, tree_map

from ntkit import _validation
from ntkit._progress import progress_bar
from ntkit._validation import check_memory

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
    free = _validation.available_memory(device)
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
    _check_examples_independent(model, x1 if x2 is None else torch.cat([x1[:2], x2[:2]]))
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


#: Examples the independence probe runs together (and one at a time).
INDEPENDENCE_PROBE = 4


def _check_examples_independent(model: nn.Module, x: torch.Tensor) -> None:
    """A ValueError when an example's output depends on the other examples of its batch.

    The NTK is per example: Θ(x, x') must not depend on which examples share a batch. Models that use batch
    statistics (``x - x.mean(0)``, a custom normalisation, BatchNorm in training mode) or that are random in
    forward break that, and each method would then compute a different, meaningless kernel. The first
    ``INDEPENDENCE_PROBE`` examples are run as one batch and one at a time; outputs that differ by more than
    rounding, √ε times the output scale (ε the machine epsilon of the arithmetic, :func:`_rounding_epsilon`), are
    refused.
    """
    batch = x[:INDEPENDENCE_PROBE]
    if batch.shape[0] < 2:
        return  # one example: nothing to interact with
    with torch.no_grad():
        together = model(batch).reshape(batch.shape[0], -1)
        alone = torch.cat([model(batch[i : i + 1]).reshape(1, -1) for i in range(batch.shape[0])])
    if not together.is_floating_point() or together.shape != alone.shape:
        return
    scale = float(torch.maximum(together.abs().max(), alone.abs().max()))
    tolerance = math.sqrt(_rounding_epsilon(together)) * scale
    difference = float((together - alone).abs().max())
    if not difference <= tolerance:  # also catches NaN
        raise ValueError(
            f"model's output for an example depends on the other examples in its batch: {batch.shape[0]} examples "
            f"run together and one at a time differ by up to {difference:.3g} (rounding allows {tolerance:.3g}), so "
            "a per-example NTK is undefined. Batch statistics (x - x.mean(0), a custom normalisation, BatchNorm "
            "in training mode) or randomness in forward cause this; make forward treat each example alone"
        )


def _rounding_epsilon(out: torch.Tensor) -> float:
    """Machine epsilon of the arithmetic that made ``out``: its dtype's, or TF32's 2⁻¹⁰ for float32 on CUDA where
    TF32 matmuls or cuDNN convolutions are allowed (batched and single-example calls may pick different kernels)."""
    eps = torch.finfo(out.dtype).eps
    if out.is_cuda and out.dtype == torch.float32:
        if torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32:
            eps = max(eps, 2.0**-10)
    return eps


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


#: Block-sized arrays alive at once while a pair block is formed and stored: the running sum over parameter
#: tensors or layers, the next term, and their sum (or the block, its mirror and their symmetrised mean).
PAIR_COPIES = 3


def pair_bytes(problem: Problem) -> int:
    """Bytes one (x1, x2) example pair takes in the working set of a pair block: ``PAIR_COPIES`` copies of its
    O² ("full"), O ("diagonal") or 1 ("trace", "mean") numbers."""
    per_pair = math.prod(output_shape(problem.output, 1, 1, problem.n_outputs))
    return PAIR_COPIES * per_pair * problem.itemsize


def check_working_set(problem: Problem, block: int, block_bytes: float) -> None:
    """Refuse (``MemoryBudgetError``) before allocating when the result plus the working set of one block pair
    exceeds the memory available, and say what would fit.

    Needed ≈ N1·N2·(numbers per pair)·itemsize for the result, plus ``pair_bytes``·B² for a pair block of B
    rows and B columns, plus ``block_bytes``, what the method holds for its blocks (Jacobians, layer factors,
    cotangents).
    """
    n1, n2 = problem.x1.shape[0], problem.x2.shape[0]
    result = math.prod(output_shape(problem.output, n1, n2, problem.n_outputs)) * problem.itemsize
    rows, cols = min(block, n1), min(block, n2)
    needed = int(result + pair_bytes(problem) * rows * cols + block_bytes)
    advice = [f"fewer rows (x1 has {n1}, x2 {n2}; the result grows as N1·N2)"]
    if problem.output in ("full", "diagonal"):
        factor = problem.n_outputs ** (2 if problem.output == "full" else 1)
        advice.append(f"output='mean' or 'trace' ({factor}× smaller than {problem.output!r})")
    if problem.itemsize > 4:
        advice.append("float32 (model.float() and float inputs: half the bytes)")
    if block > 1:
        advice.append(f"a smaller batch_size (this call uses blocks of {block})")
    advice.append("or ntkit.scale, which tiles a kernel too large for memory onto disk")
    check_memory(
        needed,
        problem.x1.device,
        f"empirical_ntk(output={problem.output!r}) of {n1}×{n2} examples with {problem.n_outputs} outputs "
        f"(result {result / 2**30:.2f} GiB plus the working set of one block pair)",
        "use " + ", ".join(advice),
    )


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
    progress: bool | None = None,
    block_bytes: float = 0.0,
) -> torch.Tensor:
    """Fill the (N1, N2, ...) kernel block by block with ``pair_block(rows, cols)``.

    When x2 was omitted only blocks on and above the diagonal are computed; the others are mirrored, and the
    diagonal blocks are symmetrised so that the result is exactly symmetric. Each block is detached as it is
    stored, so the kernel is a plain tensor (no ``grad_fn``) and no block keeps an autograd graph alive.
    Before anything is allocated the result and working set are checked against the memory available
    (:func:`check_working_set`, with ``block_bytes`` what the method holds for its blocks). A tqdm bar counts
    the pair blocks (``progress``: None shows it once the call has run for ``PROGRESS_DELAY`` seconds, True at
    once, False never); work that would be one block is split into ``SPLIT_INTO`` row blocks so the bar moves.
    """
    check_working_set(problem, block_size, block_bytes)
    n1, n2 = problem.x1.shape[0], problem.x2.shape[0]
    if progress is not False and block_size >= max(n1, n2) >= SPLIT_FROM:
        block_size = math.ceil(max(n1, n2) / SPLIT_INTO)  # smaller blocks only lower the memory
    out = torch.empty(
        output_shape(problem.output, n1, n2, problem.n_outputs),
        dtype=_result_dtype(problem),
        device=problem.x1.device,
    )
    rows, cols = block_slices(n1, block_size), block_slices(n2, block_size)
    pairs = [(i, j) for i in range(len(rows)) for j in range(len(cols)) if not (problem.symmetric and j < i)]
    bar = progress_bar(len(pairs), "NTK blocks", progress)
    try:
        for i, j in pairs:
            block = pair_block(rows[i], cols[j]).detach()
            if problem.symmetric and i == j:
                block = 0.5 * (block + mirror(block, problem.output))
            out[rows[i], cols[j]] = block
            if problem.symmetric and i != j:
                out[cols[j], rows[i]] = mirror(block, problem.output)
            bar.update()
    finally:
        bar.close()
    if problem.output == "mean":
        out /= problem.n_outputs
    return out


def _result_dtype(problem: Problem) -> torch.dtype:
    return next(iter(problem.params.values())).dtype


#: A kernel of at least SPLIT_FROM examples per side that would be one block is split into SPLIT_INTO row blocks
#: when a progress bar may show, so that the bar has steps to count.
SPLIT_FROM, SPLIT_INTO = 128, 4


def block_size_for(
    bytes_per_example: float, n: int, budget: int = DEFAULT_MEMORY_BUDGET, bytes_per_pair: float = 0.0
) -> int:
    """The largest block B whose intermediates fit in ``budget`` bytes (at least 1, at most n):
    ``bytes_per_example``·B + ``bytes_per_pair``·B² ≤ budget, the second term for the pair block of B rows and B
    columns (:func:`pair_bytes`), which dominates for ``output="full"`` with many outputs."""
    linear, quadratic = max(bytes_per_example, 1.0), bytes_per_pair
    if quadratic <= 0:
        return int(max(1, min(n, math.floor(budget / linear))))
    root = (-linear + math.sqrt(linear * linear + 4 * quadratic * budget)) / (2 * quadratic)
    return int(max(1, min(n, math.floor(root))))


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
