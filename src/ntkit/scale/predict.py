"""Predictions of kernel regression, f(x_test) = K(x_test, x_train) α, with K(x_test, x_train) streamed in tiles.

Each dask task computes one (test tile I, train tile J) block of the kernel, multiplies it by α[J] and returns
only the (tile, O) product; the driver sums the products. The (M, N) cross kernel is never stored or held.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ntkit._validation import positive_int
from ntkit.infinite.layers import Layer
from ntkit.scale._cluster import CONNECT_TIMEOUT, client_for, run_bounded
from ntkit.scale.kernel import TileFunction, _check_arch, _check_x


def _tile_product(fn: TileFunction, kind: str, a: torch.Tensor, b: torch.Tensor, alpha: np.ndarray, i: int):
    torch.set_num_threads(1)  # scoped to the worker process
    return i, fn(a, b)[kind].astype(np.float64) @ alpha


def predict(arch: Layer | nn.Module, x_test: torch.Tensor, x_train: torch.Tensor, alpha, *, get: str = "ntk",
            tile: int = 2048, dtype: torch.dtype = torch.float32, client=None, n_workers: int | None = None,
            progress: bool = True, connect_timeout: float = CONNECT_TIMEOUT) -> torch.Tensor:  # fmt: skip
    """f(x_test) = K(x_test, x_train) · alpha for K = ``arch``'s ``get`` kernel (the one alpha was solved with).

    Parameters
    ----------
    arch:
        The ntkit spec or nn.Module given to :func:`ntkit.scale.kernel`.
    x_test, x_train:
        Inputs (M, ...) and (N, ...).
    alpha:
        (N,) or (N, O) from :func:`ntkit.scale.solve` (torch or numpy).
    get:
        "ntk" or "nngp".
    tile, dtype:
        As in :func:`ntkit.scale.kernel` (use the same dtype to reproduce its tiles).
    client, n_workers, connect_timeout:
        Where the tiles run, as in :func:`ntkit.scale.kernel`.
    progress:
        Show a progress bar over tiles.

    Returns
    -------
    torch.Tensor (M,) or (M, O), float64.

    Raises
    ------
    TypeError, ValueError, ConnectionError
        As :func:`ntkit.scale.kernel`; ValueError also when alpha's length is not N.
    """
    from tqdm.auto import tqdm

    from ntkit.scale.kernel import _dtype_name

    positive_int("tile", tile)
    x_train = _check_x("x_train", x_train)
    x_test = _check_x("x_test", x_test, like=x_train)
    kinds = _check_arch(arch, x_train, get)
    a = alpha.detach().cpu().numpy() if isinstance(alpha, torch.Tensor) else np.asarray(alpha)
    vector = a.ndim == 1
    a = a[:, None] if vector else a
    if a.ndim != 2 or a.shape[0] != x_train.shape[0]:
        raise ValueError(f"alpha must be (N,) or (N, O) with N = {x_train.shape[0]} as x_train; got {tuple(a.shape)}")
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"alpha must be a floating-point array or tensor; got dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise ValueError(f"alpha contains {int((~np.isfinite(a)).sum())} NaN or infinite value(s)")
    a = a.astype(np.float64)
    fn = TileFunction(arch, kinds, _dtype_name(dtype))
    m, n = x_test.shape[0], x_train.shape[0]
    # a generator of clones: a pickled slice of a tensor carries its whole storage, and the driver holds only the
    # window's blocks
    tasks = ((fn, kinds[0], x_test[i : i + tile].clone(), x_train[j : j + tile].clone(), a[j : j + tile].copy(), i)
             for i in range(0, m, tile) for j in range(0, n, tile))  # fmt: skip
    count = -(-m // tile) * -(-n // tile)
    out = np.zeros((m, a.shape[1]))
    with client_for(client, n_workers, connect_timeout) as c:
        threads = sum(c.nthreads().values()) or 1
        with tqdm(total=count, unit="tile", desc="predict tiles", disable=not progress) as bar:
            for i, part in run_bounded(c, _tile_product, tasks, window=max(4, 2 * threads)):
                out[i : i + part.shape[0]] += part
                bar.update(1)
    result = torch.from_numpy(out)
    return result[:, 0] if vector else result
