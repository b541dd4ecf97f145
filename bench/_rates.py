"""The machine's measured throughputs, for the benchmarks' "distance to the floor" lines.

* GEMM: every backend of ``ntkit._gemm`` (torch's default, oneDNN, numpy's OpenBLAS) on an n×n×n product, timed
  interleaved, best of ``repeats`` (FLOP/s = 2n³ / time), and the backend ntkit's calibration chose;
* elementwise: ``torch.add(a, b, out=c)`` on arrays far larger than the caches, as bytes moved per second
  (3 arrays read or written), the rate that bounds the infinite-width recursions (a few passes over each
  block of covariances per layer).
"""

from __future__ import annotations

import time


def gemm_rates(n: int = 2048, repeats: int = 3) -> dict:
    """{dtype: {"rates": {backend: FLOP/s}, "chosen": backend}} for float32 and float64."""
    import torch

    from ntkit import _gemm

    out = {}
    for dtype in (torch.float32, torch.float64):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        names = _gemm.available_backends(dtype)
        best = {name: float("inf") for name in names}
        for name in names:
            _gemm._IMPLEMENTATIONS[name](a, b)  # warm-up
        for _ in range(repeats):
            for name in names:
                start = time.perf_counter()
                _gemm._IMPLEMENTATIONS[name](a, b)
                best[name] = min(best[name], time.perf_counter() - start)
        out[str(dtype).replace("torch.", "")] = {
            "rates": {name: 2 * n**3 / t for name, t in best.items()},
            "chosen": _gemm.gemm_backend(dtype),
            "n": n,
        }
    return out


def elementwise_rate(dtype_name: str = "float64", numel: int = 1 << 25, repeats: int = 5) -> float:
    """Bytes per second of a large out-of-place add (two reads and one write per entry), best of ``repeats``."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(numel, dtype=dtype), torch.randn(numel, dtype=dtype)
    c = torch.empty_like(a)
    torch.add(a, b, out=c)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.add(a, b, out=c)
        best = min(best, time.perf_counter() - start)
    return 3 * numel * a.element_size() / best


def describe_gemm(rates: dict) -> list[str]:
    """One line per dtype: each backend's GFLOP/s and the one ntkit chose."""
    lines = []
    for dtype, info in rates.items():
        each = ", ".join(f"{name} {r / 1e9:.1f}" for name, r in info["rates"].items())
        lines.append(f"GEMM {dtype} {info['n']}^3 (GFLOP/s): {each}; ntkit's calibration chose {info['chosen']}")
    return lines
