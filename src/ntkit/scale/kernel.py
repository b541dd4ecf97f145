"""Kernel matrices larger than memory: computed in resumable tiles by dask.distributed workers into a zarr store.

For row tiles I and column tiles J of ``tile`` examples each, tile (I, J) is

    K[I, J] = arch.kernel(x1[I], x2[J])              (an ntkit Layer spec: infinite-width NNGP and NTK), or
    K[I, J] = ntkit.empirical_ntk(model, x1[I], x2[J])  (an nn.Module: its empirical NTK, output="mean"),

computed on a dask worker (a task takes a few consecutive tiles), which writes it to the store and marks it done.
When x2 is None only the tiles I ≤ J are computed, and diagonal tiles are computed as ``kernel(x1[I])``, so they
are exactly symmetric; the lower triangle is read as the transpose. A rerun finds the marked tiles and computes
only the others, so a run killed at any point resumes and ends bit-identical to an uninterrupted one (each tile is
a deterministic single-threaded computation, done once).

References
----------
Adlam, Lee, Padhy, Nado & Snoek, *Kernel Regression with Infinite-Width Neural Networks on Millions of
Examples*, 2023 (arXiv:2303.05420): kernel tiles in parallel on many machines.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ntkit._validation import kernel_kinds, positive_int
from ntkit.infinite.layers import Layer
from ntkit.scale import _store
from ntkit.scale._cluster import CONNECT_TIMEOUT, client_for, run_bounded

#: Environment variable naming a file to which every committed tile appends "I J" (a test and audit aid).
TILE_LOG = "NTKIT_SCALE_TILE_LOG"
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _dtype_name(dtype: torch.dtype) -> str:
    for name, d in _DTYPES.items():
        if d == dtype:
            return name
    raise ValueError(f"dtype must be torch.float32 or torch.float64; got {dtype!r}")


def _check_x(name: str, x, like: torch.Tensor | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor; got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be (N, D), (N, C, L) or (N, C, H, W) with N ≥ 1; got {tuple(x.shape)}")
    if like is not None and x.shape[1:] != like.shape[1:]:
        raise ValueError(
            f"{name} must have the trailing shape of x1, {tuple(like.shape[1:])}; got {tuple(x.shape[1:])}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return x.detach().cpu()


def _hash(x: torch.Tensor | None) -> str | None:
    if x is None:
        return None
    h = hashlib.sha256(f"{tuple(x.shape)} {x.dtype}".encode())
    h.update(x.contiguous().numpy().tobytes())
    return h.hexdigest()


def _describe(arch) -> str:
    """What the store's fingerprint records of the architecture: the spec, or a module and its parameters."""
    if isinstance(arch, Layer):
        return repr(arch)
    h = hashlib.sha256()
    for name, t in arch.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return f"{arch!r} parameters sha256:{h.hexdigest()}"


@dataclass(frozen=True)
class TileFunction:
    """``arch``'s kernel between two blocks of examples, as float arrays of the store's dtype (picklable)."""

    arch: Layer | nn.Module
    kinds: tuple[str, ...]
    dtype: str

    def __call__(self, a: torch.Tensor, b: torch.Tensor | None) -> dict[str, np.ndarray]:
        if isinstance(self.arch, Layer):
            dtype = _DTYPES[self.dtype]
            k = self.arch.kernel(a.to(dtype), None if b is None else b.to(dtype), get=self.kinds, progress=False)
            out = {kind: getattr(k, kind) for kind in self.kinds}
        else:
            from ntkit.empirical import empirical_ntk

            p = next(self.arch.parameters())
            out = {"ntk": empirical_ntk(self.arch, a.to(p.dtype), None if b is None else b.to(p.dtype), progress=False)}
        return {kind: t.detach().to(_DTYPES[self.dtype]).numpy() for kind, t in out.items()}


def _commit(layout: _store.Layout, i: int, j: int, blocks: dict[str, np.ndarray]) -> None:
    """Write tile (i, j) and then its marker (:func:`_store.write_tile`), and log it when TILE_LOG is set."""
    _store.write_tile(layout, i, j, blocks)
    log = os.environ.get(TILE_LOG)
    if log:
        with open(log, "a") as fh:
            fh.write(f"{i} {j}\n")


class _Writer:
    """One background thread that commits tiles while the caller computes the next one; at most one is pending.

    ``put`` first waits for the previous tile's commit (and raises its error), so a worker holds at most the tile
    it computes and the one being written. ``close`` waits for the last commit.
    """

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ntkit-tile-writer")
        self._pending = None

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def put(self, layout: _store.Layout, i: int, j: int, blocks: dict[str, np.ndarray]) -> None:
        self.wait()
        self._pending = self._pool.submit(_commit, layout, i, j, blocks)

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


def compute_tiles(layout: _store.Layout, fn: TileFunction, inputs: dict[tuple[str, int], torch.Tensor],
                  tiles: list[tuple[int, int]]) -> list[tuple[int, int, float]]:  # fmt: skip
    """The task a worker runs: the tiles (i, j) of ``tiles`` not yet marked done, one after the other.

    ``inputs`` maps ("x1", i) and ("x2", j) to the input blocks (each sent once per task). Tile k+1 is computed
    while a writer thread commits tile k (its chunks, then its marker); the task returns only after its last
    commit, so every tile of a finished task is in the store. Returns (i, j, seconds computing) per tile, 0 for
    a tile found done.
    """
    torch.set_num_threads(1)  # a worker process runs one tile per thread; the setting is scoped to the process
    out = []
    writer = _Writer()
    try:
        for i, j in tiles:
            if _store.is_done(layout, i, j):
                out.append((i, j, 0.0))
                continue
            a = inputs["x1", i]
            b = None if layout.symmetric and i == j else inputs["x1" if layout.symmetric else "x2", j]
            start = time.perf_counter()
            blocks = fn(a, b)
            out.append((i, j, time.perf_counter() - start))
            writer.put(layout, i, j, blocks)
            del blocks
    finally:
        writer.close()
    return out


def task_groups(todo: list[tuple[int, int]], workers: int, most: int = 8) -> list[list[tuple[int, int]]]:
    """Cut the tiles to compute into consecutive groups, one task each: at least 4 tasks per worker thread (so
    the last ones balance), at most ``most`` tiles per task."""
    size = max(1, min(most, len(todo) // (4 * max(1, workers))))
    return [todo[k : k + size] for k in range(0, len(todo), size)]


class TiledKernel:
    """A kernel matrix in a zarr store: ``nngp`` and ``ntk`` as dask arrays, ``done`` of ``total`` tiles.

    Returned by :func:`kernel`; ``TiledKernel(path)`` opens an existing store (e.g. for ``ntkit solve``).
    """

    def __init__(self, path: str | os.PathLike):
        path = os.fspath(path)
        fingerprint = _store.read_fingerprint(path)
        if fingerprint is None:
            raise FileNotFoundError(f"no ntkit kernel store at {path!r}; make one with ntkit.scale.kernel or "
                                    "`ntkit kernel`")  # fmt: skip
        self.fingerprint = fingerprint
        self.layout = _store.fingerprint_layout(path, fingerprint)
        #: Seconds the workers spent computing tiles in the call that returned this object (0 when opened).
        self.compute_seconds = 0.0

    @property
    def path(self) -> str:
        return self.layout.path

    @property
    def shape(self) -> tuple[int, int]:
        return self.layout.n1, self.layout.n2

    @property
    def total(self) -> int:
        """Tiles the complete store holds (I ≤ J only when x2 was None)."""
        return len(self.layout.stored_tiles())

    @property
    def done(self) -> int:
        """Tiles written so far."""
        return int(_store.done_mask(self.layout).sum())

    def missing(self) -> list[tuple[int, int]]:
        mask = _store.done_mask(self.layout)
        return [(i, j) for i, j in self.layout.stored_tiles() if not mask[i, j]]

    def _dask(self, kind: str):
        if kind not in self.layout.kinds:
            raise ValueError(f"the store at {self.path!r} holds {', '.join(self.layout.kinds)}, not {kind!r}")
        from dask.array import Array
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph

        name = f"ntkit-{kind}-" + tokenize(self.path, kind, self.fingerprint)
        lay = self.layout
        graph = {(name, i, j): (_store.read_tile, lay, kind, i, j) for i in range(lay.rows) for j in range(lay.cols)}
        chunks = tuple(tuple(min(lay.tile, n - s) for s in range(0, n, lay.tile)) for n in (lay.n1, lay.n2))
        array = Array(HighLevelGraph.from_collections(name, graph, dependencies=()), name, chunks,
                      dtype=np.dtype(lay.dtype))  # fmt: skip
        _BACKED[name] = (lay, kind)
        return array

    @property
    def nngp(self):
        """The NNGP kernel (N1, N2) as a dask array that reads the store's tiles."""
        return self._dask("nngp")

    @property
    def ntk(self):
        """The NTK (N1, N2) as a dask array that reads the store's tiles."""
        return self._dask("ntk")

    def __repr__(self) -> str:
        return f"TiledKernel({self.path!r}, shape={self.shape}, tile={self.layout.tile}, done {self.done}/{self.total})"


#: dask array name → (layout, kind) for arrays made by TiledKernel, so that solvers can stream the stored triangle.
_BACKED: dict[str, tuple[_store.Layout, str]] = {}


def backing_store(array) -> tuple[_store.Layout, str] | None:
    """The store and kind behind a dask array made by :class:`TiledKernel`, or None."""
    return _BACKED.get(getattr(array, "name", None))


def _fingerprint(arch, x1, x2, dtype: str, tile: int, kinds: tuple[str, ...]) -> dict:
    import ntkit

    return {"format": _store.FORMAT, "spec": _describe(arch), "x1": _hash(x1), "x2": _hash(x2), "dtype": dtype,
            "tile": tile, "ntkit": ntkit.__version__, "get": list(kinds), "symmetric": x2 is None,
            "shape": [x1.shape[0], (x1 if x2 is None else x2).shape[0]]}  # fmt: skip


_NAMES = {"spec": "architecture", "x1": "x1 (hash)", "x2": "x2 (hash)", "dtype": "dtype", "tile": "tile size",
          "ntkit": "ntkit version", "get": "kernels (get)", "symmetric": "x2 given or not", "shape": "shape",
          "format": "store format"}  # fmt: skip


def _check_same(path: str, stored: dict, wanted: dict) -> None:
    diffs = [f"{_NAMES.get(k, k)}: store has {stored.get(k)!r}, this call {wanted[k]!r}"
             for k in wanted if stored.get(k) != wanted[k]]  # fmt: skip
    if diffs:
        raise ValueError(f"the store at {path!r} holds a different kernel; it would mix two computations. "
                         "Differences: " + "; ".join(diffs) + ". Use a new path or delete the store.")  # fmt: skip


def _check_arch(arch, x1: torch.Tensor, get) -> tuple[str, ...]:
    if isinstance(arch, Layer):
        out = arch.out_shape(tuple(x1.shape[1:]))
        if len(out) != 1:
            raise ValueError(f"the architecture's per-example output shape is {out}; scale stores (N1, N2) kernels, so "
                             "end it with nk.Flatten() or a global pooling layer")  # fmt: skip
        kinds = ("nngp", "ntk") if get is None else kernel_kinds(get)
        return tuple(k for k in _store.KINDS if k in kinds)
    if isinstance(arch, nn.Module):
        if get not in (None, "ntk", ("ntk",), ["ntk"]):
            raise ValueError(f"an nn.Module has only its empirical NTK: get must be None or 'ntk'; got {get!r}")
        if next(arch.parameters(), None) is None:
            raise ValueError("the nn.Module has no parameters, so it has no NTK")
        return ("ntk",)
    raise TypeError(f"arch must be an ntkit Layer spec (e.g. nk.Sequential(...)) or a torch.nn.Module; "
                    f"got {type(arch).__name__}")  # fmt: skip


def kernel(arch: Layer | nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None, *, path: str | os.PathLike,
           get: str | tuple[str, ...] | None = None, tile: int = 2048, dtype: torch.dtype = torch.float32,
           client=None, n_workers: int | None = None, progress: bool = True,
           connect_timeout: float = CONNECT_TIMEOUT) -> TiledKernel:  # fmt: skip
    """Compute the kernel of ``arch`` between x1 and x2 tile by tile into the zarr store at ``path``, resuming.

    Tile (I, J) is ``arch.kernel(x1[I], x2[J])`` for an ntkit spec and ``empirical_ntk(arch, x1[I], x2[J])`` for
    an nn.Module (see the module docstring). A dask task computes a few consecutive tiles; its worker writes each
    (chunks, then marker) on a writer thread while computing the next, and the task ends after its last write.

    Parameters
    ----------
    arch:
        An ntkit Layer spec whose output is (N, features), or any nn.Module (its empirical NTK, output="mean").
    x1, x2:
        Inputs (N1, ...) and (N2, ...); x2=None means x1 (then only tiles I ≤ J are computed).
    path:
        Where the store lives: a local folder or any URL fsspec opens (it must be reachable from the workers).
    get:
        "nngp", "ntk" or both (default both for a spec, "ntk" for a module).
    tile:
        Examples per tile side. A worker holds about three (tile, tile) blocks per kind while computing one, plus
        the previous tile while it is written.
    dtype:
        dtype of the store; a spec's tiles are computed in it, a module's in its parameters' dtype.
    client:
        None (a LocalCluster with one single-threaded worker process per core, closed afterwards), a scheduler
        address such as "tcp://10.0.0.1:8786", or a ``distributed.Client``.
    n_workers:
        Worker processes of the LocalCluster (client=None only); default one per core.
    progress:
        Show a progress bar (tiles done, tiles/s, time left).
    connect_timeout:
        Seconds to wait for a scheduler address.

    Returns
    -------
    TiledKernel, complete: ``.nngp``/``.ntk`` dask arrays (N1, N2), ``.done == .total``.

    Raises
    ------
    TypeError
        arch, x1, x2, dtype or client of the wrong type.
    ValueError
        tile < 1, inputs of the wrong shape or with NaN, ``path`` exists and is not an ntkit store, or the store
        holds a different kernel (the message names what differs: spec, input hash, dtype, tile, version ...).
    ConnectionError
        The scheduler address cannot be reached within ``connect_timeout`` seconds.
    OSError
        ENOSPC: the disk holding the store is full (the message says so; completed tiles are kept).

    References
    ----------
    Adlam et al., *Kernel Regression with Infinite-Width Neural Networks on Millions of Examples*, 2023.

    Examples
    --------
    >>> import torch, ntkit as nk
    >>> from ntkit import scale
    >>> arch = nk.Sequential(nk.Linear(512), nk.ReLU(), nk.Linear(1))
    >>> K = scale.kernel(arch, torch.randn(100, 3), path="/tmp/K.zarr", tile=32, progress=False)  # doctest: +SKIP
    >>> K.done == K.total  # doctest: +SKIP
    True
    """
    positive_int("tile", tile)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype (torch.float32 or torch.float64); got {type(dtype).__name__}")
    dtype_name = _dtype_name(dtype)
    x1 = _check_x("x1", x1)
    x2 = None if x2 is None else _check_x("x2", x2, like=x1)
    kinds = _check_arch(arch, x1, get)
    path = os.fspath(path)
    wanted = _fingerprint(arch, x1, x2, dtype_name, tile, kinds)
    stored = _store.read_fingerprint(path)
    if stored is not None:
        _check_same(path, stored, wanted)
    layout = _store.fingerprint_layout(path, wanted)
    _store.create(layout, wanted)
    result = TiledKernel(path)
    todo = result.missing()
    if todo:
        result.compute_seconds = _compute(layout, TileFunction(arch, kinds, dtype_name), x1, x2, todo, result.total,
                                          client, n_workers, progress, connect_timeout)  # fmt: skip
    return result


def task_args(layout: _store.Layout, fn: TileFunction, x1: torch.Tensor, x2: torch.Tensor | None,
              groups: list[list[tuple[int, int]]]) -> Iterator[tuple]:  # fmt: skip
    """The arguments of :func:`compute_tiles` for each group, made lazily: each input block once per task, cloned
    (a pickled slice of a tensor carries its whole storage, i.e. all of x1, not just the block)."""
    for group in groups:
        inputs = {}
        for i, j in group:
            inputs["x1", i] = x1[layout.row_slice(i)]
            if layout.symmetric:
                inputs["x1", j] = x1[layout.col_slice(j)]
            else:
                inputs["x2", j] = x2[layout.col_slice(j)]
        yield layout, fn, {key: block.clone() for key, block in inputs.items()}, group


def _compute(layout, fn, x1, x2, todo, total, client, n_workers, progress, connect_timeout) -> float:
    """Run the tile tasks; returns the seconds the workers spent inside the tile function (summed)."""
    from tqdm.auto import tqdm

    with client_for(client, n_workers, connect_timeout) as c:
        threads = sum(c.nthreads().values()) or 1
        bar = tqdm(total=total, initial=total - len(todo), unit="tile", disable=not progress, desc="kernel tiles",
                   dynamic_ncols=True)  # fmt: skip
        seconds = 0.0
        try:
            groups = task_groups(todo, threads)
            for done in run_bounded(
                c, compute_tiles, task_args(layout, fn, x1, x2, groups), window=max(4, 2 * threads)
            ):
                seconds += sum(spent for _, _, spent in done)
                bar.update(len(done))
        finally:
            bar.close()
    return seconds
