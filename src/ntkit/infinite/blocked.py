"""The block driver behind ``arch.kernel``: the kernel matrix computed one (rows × columns) block of examples at a time.

Every layer maps the covariances of a pair of examples (x_a, x_b) using only that pair's covariances and each
example's covariance with itself, so the (N1, N2, *pair axes) kernel splits into independent blocks

    K[I, J] = transform(input_kernel(x1[I], x2[J]))      for row blocks I and column blocks J,

each of them carried through *all* layers before the next one starts. This bounds memory: no layer ever holds
more than B1·B2·|pair axes| entries of a covariance (for images (B·H·W)² rather than (N·H·W)²), and a block
small enough stays in the processor's cache through the whole network instead of streaming every 6-D covariance
through memory once per operation. When x2 is None the kernel is symmetric, K(x_a, x_b)[p, p'] =
K(x_b, x_a)[p', p], so only the blocks with I ≤ J are computed and the others are their mirror images (the
transpose of the example axes and of every pair of position axes): about half the work.

The cost of a block is the cross covariances, 2·B1·B2·P entries per layer for P = |pair axes|, plus each
example's self covariance, (B1 + B2)·P; the second is recomputed for every block and adds a fraction 1/B of
work, which is why blocks are not made smaller than needed.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from ntkit._malloc import TRIM_EVERY, keep_block_buffers, release_free_memory
from ntkit._progress import progress_bar
from ntkit._validation import available_memory, finite_result
from ntkit.infinite.kernel import _SELF_CACHE, Kernel, SelfCovarianceCache, input_kernel, self_covariance

#: Default entries of one covariance block (B1·B2·P): 2^18 float64 entries are 2 MiB, so the handful of blocks
#: alive inside a layer stay in cache and are reused by the allocator from block to block (large fresh tensors
#: cost a page fault per 4 KiB); measured on the issue-3 workloads, 2^16 to 2^20 are all within noise of each
#: other and 2^22 and more are slower.
BLOCK_ENTRIES = 1 << 18
#: Fewest examples per block side: the self covariances cost a fraction 1/B of the work of a block.
MIN_BATCH = 4


def default_batch_size(x: torch.Tensor, n: int) -> int:
    """Examples per block side so that a block of the input's pair covariances holds about BLOCK_ENTRIES entries.

    P = (H·W)² for images (no layer enlarges the spatial axes), 1 for vectors;
    B = max(MIN_BATCH, ⌊√(BLOCK_ENTRIES / P)⌋), at most n.
    """
    pair = math.prod(x.shape[2:]) ** 2
    return max(1, min(n, max(MIN_BATCH, math.isqrt(BLOCK_ENTRIES // pair))))


def _swap_pairs(t: torch.Tensor) -> torch.Tensor:
    """(N1, N2, h, h', w, w') → (N2, N1, h', h, w', w): the same covariances seen from the other example."""
    spatial = (t.ndim - 2) // 2
    return t.permute([1, 0] + [2 + 2 * d + s for d in range(spatial) for s in (1, 0)])


def symmetrize_(t: torch.Tensor) -> torch.Tensor:
    """Make a square block exactly symmetric, K(x_a, x_b)[p, p'] = K(x_b, x_a)[p', p], by averaging it with its
    mirror image; the average is formed in a scratch copy the size of the block, then written back."""
    mirror = _swap_pairs(t).clone(memory_format=torch.contiguous_format)
    return t.add_(mirror).mul_(0.5)


def _pair_shape(out_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Pair axes of a kernel whose features have per-example shape (C, *spatial): (h, h, w, w) for (C, h, w)."""
    return tuple(size for size in out_shape[1:] for _ in range(2))


def output_bytes(x1: torch.Tensor, x2: torch.Tensor | None, out_shape: tuple[int, ...], kinds: int) -> int:
    """Bytes of the kernels ``blocked_kernel`` returns: ``kinds`` (N1, N2, *pair axes) tensors plus the
    self-covariances (N1 + N2, *pair axes)."""
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    pair = math.prod(_pair_shape(out_shape))
    return (kinds * n1 * n2 + n1 + (0 if x2 is None else n2)) * pair * x1.element_size()


def working_bytes(x1: torch.Tensor, batch_size: int) -> int:
    """A bound on the memory of the blocks in flight: each worker holds a few covariances of one block at the
    input's (largest) pair size; 16 block-sized tensors per worker covers every layer's temporaries."""
    pair = math.prod(x1.shape[2:]) ** 2
    return 16 * torch.get_num_threads() * batch_size * batch_size * pair * x1.element_size()


#: Most bytes of self-covariances one call keeps (see :class:`ntkit.infinite.kernel.SelfCovarianceCache`).
SELF_CACHE_BYTES = 512 << 20


def self_cache_budget(device: torch.device) -> int:
    """Bytes the self-covariance cache may hold: SELF_CACHE_BYTES, or a sixteenth of the available memory."""
    available = available_memory(device)
    return SELF_CACHE_BYTES if available is None else min(SELF_CACHE_BYTES, available // 16)


def blocked_kernel(transform: Callable[[Kernel], Kernel], x1: torch.Tensor, x2: torch.Tensor | None,
                   batch_size: int | None = None, *, kinds: tuple[str, ...] = ("nngp", "ntk"),
                   progress: bool | None = None, finite: tuple[str, str] | None = None) -> Kernel:  # fmt: skip
    """``transform(input_kernel(x1, x2))``, computed in blocks of at most ``batch_size`` examples per side.

    Parameters
    ----------
    transform:
        The architecture's kernel map (``arch.transform``).
    x1, x2:
        Inputs (N1, ...) and (N2, ...), or x2=None for x1 with itself (then only blocks I ≤ J are computed, the
        diagonal blocks are made exactly symmetric and the others are mirrored).
    batch_size:
        Examples per block side; None picks :func:`default_batch_size`. Any value gives the same kernel up to
        rounding (the blocks are independent; self-pairs are bit-identical, see ``input_kernel``).
    kinds:
        The kernels to return. Without "ntk" the NTK is not even computed (``Kernel.ntk`` stays None); without
        "nngp" it is computed block by block, as every layer needs it, but not kept.
    progress:
        A tqdm bar over the blocks: None shows it once the call has run for 2 s, True at once, False never.
    finite:
        (name, advice): check each block as it is computed, while it is in cache, and raise a FloatingPointError
        naming ``name`` and giving ``advice`` on a NaN or infinite entry (instead of a pass over the results).

    Returns
    -------
    Kernel with nngp and ntk (N1, N2, *pair axes) (None for a kind not asked for) and var1 (and var2 when x2
    is given) for all examples.
    """
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    if batch_size is None:
        batch_size = default_batch_size(x1, max(n1, n2))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None; got {batch_size!r}")
    track_ntk = "ntk" in kinds
    symmetric = x2 is None
    rows = [(s, min(s + batch_size, n1)) for s in range(0, n1, batch_size)]
    cols = rows if symmetric else [(s, min(s + batch_size, n2)) for s in range(0, n2, batch_size)]
    blocks = [(i, j) for i in range(len(rows)) for j in range(len(cols)) if not (symmetric and j < i)]
    out: dict[str, torch.Tensor | None] = {}
    lock = threading.Lock()
    cache = SelfCovarianceCache(self_cache_budget(x1.device))
    if x1.device.type == "cpu":
        keep_block_buffers()  # freed blocks are reused, not page-faulted in afresh (ntkit._malloc)
    x_cols = x1 if symmetric else x2

    def run(block: tuple[int, int]) -> Kernel:
        i, j = block
        (a0, a1), (b0, b1) = rows[i], cols[j]
        diagonal = symmetric and i == j
        token = _SELF_CACHE.set(cache)  # in this (worker) thread: the layers find the call's cache
        try:
            var1 = cache.input(("x1", i), lambda: self_covariance(x1[a0:a1]))
            var2 = (
                None
                if diagonal
                else cache.input(("x1" if symmetric else "x2", j), lambda: self_covariance(x_cols[b0:b1]))
            )
            k = transform(input_kernel(x1[a0:a1], None if diagonal else x_cols[b0:b1], track_ntk=track_ntk,
                                       var1=var1, var2=var2))  # fmt: skip
        finally:
            _SELF_CACHE.reset(token)
        with lock:  # the first block to finish tells the output shapes
            if not out:
                pair_shape = tuple(k.nngp.shape[2:])
                for name in kinds:
                    out[name] = k.nngp.new_empty((n1, n2, *pair_shape))
                out["var1"] = k.var1.new_empty((n1, *k.var1.shape[1:]))
                out["var2"] = None if symmetric else k.var2.new_empty((n2, *k.var2.shape[1:]))
        for name in kinds:  # blocks write disjoint slices, so workers may run at once
            t = getattr(k, name)
            if finite is not None:
                finite_result(
                    f"{finite[0]}.{name}", t, f"(in the block of rows {a0}:{a1}, columns {b0}:{b1}) {finite[1]}"
                )
            if diagonal:
                t = symmetrize_(t)
            out[name][a0:a1, b0:b1] = t
            if symmetric and not diagonal:
                out[name][b0:b1, a0:a1] = _swap_pairs(t)
        if diagonal or (not symmetric and j == 0):
            out["var1"][a0:a1] = k.var1
        if not symmetric and i == 0:
            out["var2"][b0:b1] = k.var2
        return k

    bar = progress_bar(len(blocks), "kernel blocks", progress)
    try:
        last = _run_blocks(run, blocks, x1.device, bar)
    finally:
        bar.close()
        if x1.device.type == "cpu":
            release_free_memory()  # the blocks' freed memory (ntkit._malloc)
    return Kernel(out.get("nngp"), out.get("ntk"), out["var1"], out["var2"], last.shape, is_gaussian=last.is_gaussian)


def _run_blocks(run: Callable[[tuple[int, int]], Kernel], blocks: list, device: torch.device, bar) -> Kernel:
    """Run every block, in threads on the CPU, and return the last block's Kernel.

    On the CPU the blocks run in a pool of worker threads, one block per worker at a time and every torch op
    inside single-threaded: no barrier per operation (which costs milliseconds when the cores are shared with
    other processes, more than a whole op on a block) and each worker's block stays in its own core's cache.
    The thread count is set *in the workers only*: torch's intra-op thread count is a per-thread OpenMP setting,
    so the caller's threads keep theirs. torch also keeps one process-wide default that threads created later
    start from; a worker's ``set_num_threads(1)`` moves it, and the caller puts it back as soon as every worker has
    started (threads created in those few milliseconds start single-threaded; none already running is touched).
    """
    last = None
    workers = min(torch.get_num_threads(), len(blocks))
    if device.type != "cpu" or workers < 2:
        for block in blocks:
            last = run(block)
            bar.update()
        return last
    default = torch.get_num_threads()
    started = threading.Barrier(workers + 1)

    def single_threaded() -> None:
        torch.set_num_threads(1)
        started.wait()

    with ThreadPoolExecutor(workers, initializer=single_threaded) as pool:
        futures = [pool.submit(run, block) for block in blocks]
        started.wait()  # every worker is single-threaded by now: restore the default for threads made later
        torch.set_num_threads(default)
        try:
            for done, future in enumerate(futures, 1):
                last = future.result()
                bar.update()
                if done % TRIM_EVERY == 0:  # freed blocks pile up in the workers' heaps (ntkit._malloc)
                    release_free_memory()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return last
