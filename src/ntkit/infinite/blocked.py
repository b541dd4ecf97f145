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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from ntkit.infinite.kernel import Kernel, input_kernel

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


def blocked_kernel(transform: Callable[[Kernel], Kernel], x1: torch.Tensor, x2: torch.Tensor | None,
                   batch_size: int | None = None) -> Kernel:  # fmt: skip
    """``transform(input_kernel(x1, x2))``, computed in blocks of at most ``batch_size`` examples per side.

    Parameters
    ----------
    transform:
        The architecture's kernel map (``arch.transform``).
    x1, x2:
        Inputs (N1, ...) and (N2, ...), or x2=None for x1 with itself (then only blocks I ≤ J are computed and
        the rest mirrored).
    batch_size:
        Examples per block side; None picks :func:`default_batch_size`. Any value gives the same kernel up to
        rounding (the blocks are independent).

    Returns
    -------
    Kernel with nngp and ntk (N1, N2, *pair axes) and var1 (and var2 when x2 is given) for all examples.
    """
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    if batch_size is None:
        batch_size = default_batch_size(x1, max(n1, n2))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None; got {batch_size!r}")
    if batch_size >= n1 and batch_size >= n2:
        return transform(input_kernel(x1, x2))

    symmetric = x2 is None
    rows = [(s, min(s + batch_size, n1)) for s in range(0, n1, batch_size)]
    cols = rows if symmetric else [(s, min(s + batch_size, n2)) for s in range(0, n2, batch_size)]
    blocks = [(i, j) for i in range(len(rows)) for j in range(len(cols)) if not (symmetric and j < i)]
    out: dict[str, torch.Tensor | None] = {}

    def run(block: tuple[int, int]) -> Kernel:
        i, j = block
        (a0, a1), (b0, b1) = rows[i], cols[j]
        diagonal = symmetric and i == j
        k = transform(input_kernel(x1[a0:a1], None if diagonal else (x1 if symmetric else x2)[b0:b1]))
        if not out:  # the first block tells the output shapes
            pair_shape = tuple(k.nngp.shape[2:])
            out["nngp"] = k.nngp.new_empty((n1, n2, *pair_shape))
            out["ntk"] = k.ntk.new_empty((n1, n2, *pair_shape))
            out["var1"] = k.var1.new_empty((n1, *k.var1.shape[1:]))
            out["var2"] = None if symmetric else k.var2.new_empty((n2, *k.var2.shape[1:]))
        for name in ("nngp", "ntk"):  # blocks write disjoint slices, so workers may run at once
            out[name][a0:a1, b0:b1] = getattr(k, name)
            if symmetric and not diagonal:
                out[name][b0:b1, a0:a1] = _swap_pairs(getattr(k, name))
        if diagonal or (not symmetric and j == 0):
            out["var1"][a0:a1] = k.var1
        if not symmetric and i == 0:
            out["var2"][b0:b1] = k.var2
        return k

    if x1.device.type != "cpu":
        for block in blocks:
            last = run(block)
    else:
        # Blocks in parallel, one thread each, every torch op inside single-threaded: no barrier per operation
        # (which costs milliseconds when the cores are shared with other processes, more than a whole op on a
        # block) and each worker's block stays in its own core's cache. The first block runs alone: it allocates
        # the outputs.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            last = run(blocks[0])
            workers = min(threads, len(blocks) - 1)
            if workers > 1:
                with ThreadPoolExecutor(workers) as pool:
                    for k in pool.map(run, blocks[1:]):
                        last = k
            else:
                for block in blocks[1:]:
                    last = run(block)
        finally:
            torch.set_num_threads(threads)
    return Kernel(out["nngp"], out["ntk"], out["var1"], out["var2"], last.shape, is_gaussian=last.is_gaussian)
