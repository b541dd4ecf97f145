"""Where the tasks run: a given dask ``Client``, a scheduler address, or a LocalCluster started and closed here."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

#: glibc settings for LocalCluster workers. dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which
#: also freezes glibc's mmap threshold at 128 KiB, so every tile-sized temporary is a fresh mmap and faults in each
#: page: kernel tiles then ran 2-3x slower in a worker than in the driver (measured on the FC NTK, tile 2048). A
#: 32 MiB mmap threshold and a 256 MiB trim threshold keep the allocator's reuse and still return memory.
WORKER_MALLOC = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": str(256 << 20),
    "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": str(32 << 20),
}
#: Settings of ntkit's own LocalCluster workers besides glibc's: no statistical profiler (it samples the running
#: task's stack every 10 ms for a dashboard page that ntkit's clusters do not serve; an idle worker used 2.9 % of a
#: core with it and 1.8 % without, measured here).
WORKER_SETTINGS = {"distributed.worker.profile.enabled": False}
#: Seconds to wait for a scheduler address before saying it cannot be reached.
CONNECT_TIMEOUT = 10.0


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


@contextmanager
def client_for(client=None, n_workers: int | None = None, connect_timeout: float = CONNECT_TIMEOUT) -> Iterator:
    """A ``distributed.Client``: ``client`` itself, one connected to the scheduler address ``client``, or (None) a
    LocalCluster of ``n_workers`` single-threaded worker processes (default: one per core), closed on exit.

    Raises
    ------
    TypeError
        ``client`` is neither None, an address string nor a ``distributed.Client``.
    ConnectionError
        The scheduler at the address does not answer within ``connect_timeout`` seconds.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - the [scale] extra is part of [dev]
        raise ImportError(f"ntkit.scale needs dask.distributed ({exc}); pip install 'ntkit[scale]'") from None
    if isinstance(client, Client):
        yield client
        return
    if client is not None and not isinstance(client, str):
        raise TypeError(f"client must be None, a scheduler address such as 'tcp://10.0.0.1:8786' or a "
                        f"distributed.Client; got {type(client).__name__}")  # fmt: skip
    if isinstance(client, str):
        try:
            own = Client(client, timeout=connect_timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"cannot reach the dask scheduler at {client!r} within {connect_timeout:g} s "
                                  f"({type(exc).__name__}: {exc}); start one with `dask scheduler` and workers "
                                  "with `dask worker ADDRESS`, or omit the address to run here") from None  # fmt: skip
        with own:
            yield own
        return
    if n_workers is not None and (isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1):
        raise ValueError(f"n_workers must be a positive int or None; got {n_workers!r}")
    import dask

    with dask.config.set({**WORKER_MALLOC, **WORKER_SETTINGS}):
        cluster = LocalCluster(n_workers=n_workers or cpu_count(), threads_per_worker=1, processes=True,
                               dashboard_address=None, worker_dashboard_address=None)  # fmt: skip
    try:
        with Client(cluster, set_as_default=False) as own:
            yield own
    finally:
        cluster.close()


def run_bounded(client, fn: Callable, args: Iterable[tuple], window: int) -> Iterator:
    """Submit ``fn(*a)`` for every ``a`` in ``args`` with at most ``window`` tasks in flight; yield each result as
    it completes. Inputs are submitted lazily, so the driver holds only the window's arguments."""
    from distributed import as_completed

    args = iter(args)
    pending = as_completed(loop=client.loop)
    for a in args:
        pending.add(client.submit(fn, *a, pure=False))
        if pending.count() >= window:
            break
    for future in pending:
        yield future.result()
        future.release()
        nxt = next(args, None)
        if nxt is not None:
            pending.add(client.submit(fn, *nxt, pure=False))
