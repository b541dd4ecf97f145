"""Passes over a kernel matrix that stream its tiles: products K·V, selected columns K[:, S], the diagonal.

The matrix is either a zarr store written by :func:`ntkit.scale.kernel` (its dask arrays are recognised, and a
symmetric store is read once per pass: each stored tile (I, J), I < J, serves both K[I, J]·V[J] and
K[I, J]ᵀ·V[I]), or any square dask array (then each pass is a dask computation). Products accumulate in float64
whatever the store's dtype. Each thread holds one tile at a time.

Products K·V run either on threads of the driver (default) or, given a dask client, on the workers: one task per
row band I reads the stored tiles (I, J), J ≥ I, and returns K[I, :]-band contributions — K[I, J]·V[J] for its rows
and, for a symmetric store, K[I, J]ᵀ·V[I] for the rows of J > I — which the driver sums. V is scattered to every
worker once per product; the tiles never leave the workers. Columns and the diagonal stay in the driver.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ntkit.scale import _store
from ntkit.scale._cluster import cpu_count
from ntkit.scale.kernel import backing_store


def band_product(layout: _store.Layout, kind: str, i: int, v: np.ndarray) -> tuple[int, np.ndarray, np.ndarray | None]:
    """The task of a worker-side product: row band I of K·V from the stored tiles (I, J). Returns (I, the band's
    rows of K·V from these tiles, and for a symmetric store the (N − end of band I, O) contributions
    K[I, J]ᵀ·V[I] to the rows after the band, else None)."""
    rows = layout.row_slice(i)
    own = np.zeros((rows.stop - rows.start, v.shape[1]))
    after = np.zeros((layout.n2 - rows.stop, v.shape[1])) if layout.symmetric else None
    for j in range(i if layout.symmetric else 0, layout.cols):
        cols = layout.col_slice(j)
        t = _store.read_tile(layout, kind, i, j).astype(np.float64, copy=False)
        own += t @ v[cols]
        if after is not None and j != i:
            after[cols.start - rows.stop : cols.stop - rows.stop] += t.T @ v[rows]
    return i, own, after


class StreamedMatrix:
    """A square (N, N) kernel read tile by tile; never held whole. With ``client`` (a ``distributed.Client``),
    products run on its workers (see the module docstring)."""

    def __init__(self, array, threads: int | None = None, client=None):
        shape = getattr(array, "shape", None)
        if not hasattr(array, "dask") or shape is None or len(shape) != 2:
            raise TypeError(f"K must be a 2-D dask array such as scale.kernel(...).ntk; got {type(array).__name__}")
        if shape[0] != shape[1]:
            raise ValueError(f"K must be square (the train-train kernel); got shape {tuple(shape)}")
        self.array = array
        self.n = int(shape[0])
        self.backing = backing_store(array)
        self.threads = threads or cpu_count()
        self.client = client
        if self.backing is not None:
            layout, kind = self.backing
            mask = _store.done_mask(layout)
            missing = sum(not mask[i, j] for i, j in layout.stored_tiles())
            if missing:
                raise ValueError(f"the store at {layout.path!r} is incomplete ({missing} tiles missing); rerun "
                                 "scale.kernel (or `ntkit kernel`) with the same arguments to finish it")  # fmt: skip

    def _tiles(self) -> list[tuple[int, int]]:
        return self.backing[0].stored_tiles()

    def _pass(self, work) -> None:
        """Run ``work(i, j, tile)`` on every stored tile, ``threads`` at a time."""
        layout, kind = self.backing
        with ThreadPoolExecutor(self.threads) as pool:
            for f in [
                pool.submit(lambda ij: work(*ij, _store.read_tile(layout, kind, *ij)), ij) for ij in self._tiles()
            ]:
                f.result()

    def matmul(self, v: np.ndarray) -> np.ndarray:
        """K @ v for v (N, O), in float64."""
        if self.backing is None:
            return np.asarray((self.array @ v).compute(scheduler="threads", num_workers=self.threads), dtype=np.float64)
        layout = self.backing[0]
        if self.client is not None:
            return self._matmul_on_workers(v)
        out = np.zeros((self.n, v.shape[1]))
        lock = threading.Lock()

        def work(i, j, tile):
            rows, cols = layout.row_slice(i), layout.col_slice(j)
            t = tile.astype(np.float64, copy=False)
            a = t @ v[cols]
            b = t.T @ v[rows] if layout.symmetric and i != j else None
            with lock:
                out[rows] += a
                if b is not None:
                    out[cols] += b

        self._pass(work)
        return out

    def _matmul_on_workers(self, v: np.ndarray) -> np.ndarray:
        from distributed import as_completed

        layout, kind = self.backing
        v = np.ascontiguousarray(v, dtype=np.float64)
        shared = self.client.scatter(v, broadcast=True, hash=False)
        out = np.zeros((self.n, v.shape[1]))
        try:
            futures = [
                self.client.submit(band_product, layout, kind, i, shared, pure=False) for i in range(layout.rows)
            ]
            for future in as_completed(futures, loop=self.client.loop):
                i, own, after = future.result()
                rows = layout.row_slice(i)
                out[rows] += own
                if after is not None:
                    out[rows.stop :] += after
        finally:
            self.client.cancel([shared])
        return out

    def columns(self, index: np.ndarray) -> np.ndarray:
        """K[:, index] (N, len(index)) in float64, in one pass."""
        if self.backing is None:
            return np.asarray(self.array[:, index].compute(scheduler="threads"), dtype=np.float64)
        layout = self.backing[0]
        out = np.zeros((self.n, len(index)))
        position = np.full(self.n, -1)
        position[index] = np.arange(len(index))

        def work(i, j, tile):
            rows, cols = layout.row_slice(i), layout.col_slice(j)
            local = np.nonzero(position[cols] >= 0)[0]
            out[rows, position[cols][local]] = tile[:, local]
            if layout.symmetric and i != j:
                local = np.nonzero(position[rows] >= 0)[0]
                out[cols, position[rows][local]] = tile[local, :].T

        self._pass(work)
        return out

    def diagonal(self) -> np.ndarray:
        """diag K (N,) in float64, from the diagonal tiles only."""
        if self.backing is None:
            import dask.array as da

            return np.asarray(da.diagonal(self.array).compute(scheduler="threads"), dtype=np.float64)
        layout, kind = self.backing
        tiles = [np.diagonal(_store.read_tile(layout, kind, i, i)) for i in range(min(layout.rows, layout.cols))]
        return np.concatenate(tiles).astype(np.float64)
