"""The fastest matrix product the machine has, chosen by measurement: one small adapter for every big GEMM.

``matmul_nt(a, b)`` computes C = A·Bᵀ for A (M, K) and B (N, K), the shape of every Gram product in the
structured empirical NTK (h·h', δ·δ') and in Jacobian contraction. On the CPU it can run through

* ``"torch"``: ``a @ b.T``, torch's default (MKL in the x86 wheels, OpenBLAS/ACL on ARM);
* ``"onednn"``: oneDNN's inner-product primitive, ``torch.ops.mkldnn._linear_pointwise`` (float32 only), a
  private torch entry point;
* ``"openblas"``: numpy's own BLAS (the scipy-openblas of the numpy wheels) on zero-copy views of the tensors.

MKL picks a slower code path on non-Intel processors, so which backend is fastest depends on the machine, not on
the code: the first float32/float64 CPU product of at least ``CALIBRATE_ABOVE`` multiply-adds (smaller ones
keep torch's default) times every available backend on two representative shapes (about 1-2 s, once per
process, dtype and thread count) and keeps the fastest, if it beats torch's default by more than ``MARGIN`` (a
backend with its own thread pool, OpenBLAS, only when forced: :func:`choose_backend`); a backend whose result
disagrees with torch's beyond rounding is never chosen.
The choice can be forced with the environment variable ``NTKIT_GEMM`` (``auto``, ``torch``, ``onednn``,
``openblas``) or :func:`set_gemm_backend`.

Every non-default backend sits behind this file only, and every call falls back to ``a @ b.T`` when the entry
point is missing, refuses the inputs or raises (a backend that raised is not used again in this process): a
torch or numpy upgrade can cost speed, never correctness. Inputs that need gradients, complex or half
precision, and every non-CPU device always take ``a @ b.T``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import torch

BACKENDS = ("torch", "onednn", "openblas")
ENV_VAR = "NTKIT_GEMM"
#: A backend replaces torch's default only when its calibrated time is below (1 − MARGIN) times torch's.
MARGIN = 0.05
#: Backends with a thread pool of their own (numpy's OpenBLAS): after each product their threads spin for a while
#: and compete with torch's OpenMP threads for the same cores, which a GEMM-only calibration cannot see. On the AMD
#: EPYC (2 cores) the structured empirical NTK ran 1.5–3.8× slower in the processes whose calibration had picked
#: OpenBLAS, so they are never chosen automatically, only when forced (NTKIT_GEMM=openblas).
FOREIGN_POOL = frozenset({"openblas"})
#: (M, K, N) of the calibration products: a square Gram product and a long inner dimension (δ·δ' of a layer).
#: Large enough to be in each library's large-matrix regime: at 768³ MKL's slow AMD path was as fast as oneDNN
#: (88 against 95 GFLOP/s on the EPYC) and the calibration kept torch's default, which at the workload's sizes
#: (1024² × 10240) runs at half oneDNN's rate (63 against 104 GFLOP/s at 1024³).
CALIBRATION_SHAPES = ((1024, 1024, 1024), (512, 2048, 512))
CALIBRATION_REPEATS = 3
#: Products of fewer multiply-adds (M·K·N) take torch's default without calibrating (unless a backend is forced):
#: at ~100 GFLOP/s a 2^24-MAC product takes ~0.3 ms, too little for the choice to repay a calibration.
CALIBRATE_ABOVE = 1 << 24

_forced: str | None = None
_chosen: dict[tuple[torch.dtype, int], str] = {}
_broken: set[str] = set()
_last_rates: dict[tuple[torch.dtype, int], dict[str, float]] = {}


def _torch_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b.T


def _onednn_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # linear(a, b) = a bᵀ through oneDNN's inner product; private API, float32 only
    return torch.ops.mkldnn._linear_pointwise(a.contiguous(), b.contiguous(), None, "none", [], "")


def _openblas_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.matmul(a.numpy(), b.numpy().T))


_IMPLEMENTATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "torch": _torch_nt,
    "onednn": _onednn_nt,
    "openblas": _openblas_nt,
}
_DTYPES = {
    "torch": (torch.float32, torch.float64),
    "onednn": (torch.float32,),
    "openblas": (torch.float32, torch.float64),
}


def set_gemm_backend(name: str | None) -> None:
    """Force one backend for every later product (``None`` or ``"auto"``: choose by measurement again).

    Raises
    ------
    ValueError
        For a name that is not ``"auto"`` or one of :data:`BACKENDS`.
    """
    global _forced
    if name is not None and name != "auto" and name not in BACKENDS:
        raise ValueError(f"GEMM backend must be 'auto' or one of {BACKENDS}; got {name!r}")
    _forced = None if name in (None, "auto") else name
    _chosen.clear()


def available_backends(dtype: torch.dtype) -> list[str]:
    """Backends that can take CPU tensors of ``dtype`` here (the entry point exists, not known to fail)."""
    names = []
    for name in BACKENDS:
        if dtype not in _DTYPES[name] or name in _broken:
            continue
        if name == "onednn" and not (torch.backends.mkldnn.is_available() and _has_linear_pointwise()):
            continue
        names.append(name)
    return names


def _has_linear_pointwise() -> bool:
    try:
        return hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


def gemm_backend(dtype: torch.dtype) -> str:
    """The backend that :func:`matmul_nt` uses for CPU tensors of ``dtype`` (calibrating on first use)."""
    forced = _forced or _env_backend()
    if forced is not None:
        return forced if forced in available_backends(dtype) else "torch"
    if dtype not in (torch.float32, torch.float64):
        return "torch"
    key = (dtype, torch.get_num_threads())
    if key not in _chosen:
        _chosen[key] = _calibrate(dtype)
    choice = _chosen[key]
    return choice if choice not in _broken else "torch"


def _env_backend() -> str | None:
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value == "auto":
        return None
    if value not in BACKENDS:
        raise ValueError(f"environment variable {ENV_VAR} must be 'auto' or one of {BACKENDS}; got {value!r}")
    return value


def matmul_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A·Bᵀ for A (M, K) and B (N, K), by the fastest backend measured on this machine (see the module docstring).

    Parameters
    ----------
    a, b:
        2-D tensors with the same inner size K, dtype and device.

    Returns
    -------
    torch.Tensor (M, N), equal to ``a @ b.T`` up to floating-point rounding (each backend sums the K products in
    its own order: |error| ≤ K·ε·Σ_k |a_mk b_nk| for the dtype's ε).

    Example
    -------
    >>> a, b = torch.randn(4, 3), torch.randn(5, 3)
    >>> torch.allclose(matmul_nt(a, b), a @ b.T, atol=1e-6)
    True
    """
    if (
        a.device.type != "cpu"
        or a.dtype not in (torch.float32, torch.float64)
        or a.dtype != b.dtype
        or a.requires_grad
        or b.requires_grad
        or a.ndim != 2
        or b.ndim != 2
        or b.device != a.device
        or a.shape[1] != b.shape[1]
    ):
        return a @ b.T  # torch's own error for mismatched inputs; no backend is blamed for the caller's mistake
    if _forced is None and _env_backend() is None and a.shape[0] * a.shape[1] * b.shape[0] < CALIBRATE_ABOVE:
        return a @ b.T
    name = gemm_backend(a.dtype)
    if name == "torch":
        return a @ b.T
    try:
        return _IMPLEMENTATIONS[name](a.detach(), b.detach())
    except Exception:  # a private entry point changed or refused these inputs: correctness first
        _broken.add(name)
        return a @ b.T


def _calibrate(dtype: torch.dtype) -> str:
    """Time every available backend on :data:`CALIBRATION_SHAPES`, interleaved, and return the fastest that agrees
    with torch's product to rounding and beats it by more than :data:`MARGIN` (else ``"torch"``)."""
    names = available_backends(dtype)
    if names == ["torch"]:
        return "torch"
    gen = torch.Generator().manual_seed(0)
    problems = [
        (torch.randn(m, k, generator=gen, dtype=dtype), torch.randn(n, k, generator=gen, dtype=dtype))
        for m, k, n in CALIBRATION_SHAPES
    ]
    eps = torch.finfo(dtype).eps
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in list(names):
        for a, b in problems:  # warm-up and agreement with torch's default
            try:
                c = _IMPLEMENTATIONS[name](a, b)
            except Exception:
                _broken.add(name)
                times.pop(name)
                break
            bound = 2 * a.shape[1] * eps * (a.abs() @ b.abs().T)  # each product is within half of this
            if c.shape != (a.shape[0], b.shape[0]) or not bool(((c - a @ b.T).abs() <= bound).all()):
                _broken.add(name)
                times.pop(name)
                break
    # Interleaved repeats, so that a burst of load hits every backend alike, and the fastest repeat of each: on a
    # shared machine the minimum estimates the unloaded time, a median the load.
    for _ in range(CALIBRATION_REPEATS):
        for name in times:
            start = time.perf_counter()
            for a, b in problems:
                _IMPLEMENTATIONS[name](a, b)
            times[name].append(time.perf_counter() - start)
    fastest = {name: min(t) for name, t in times.items()}
    flops = sum(2 * m * k * n for m, k, n in CALIBRATION_SHAPES)
    _last_rates[(dtype, torch.get_num_threads())] = {name: flops / t for name, t in fastest.items()}
    return choose_backend(fastest)


def choose_backend(seconds: dict[str, float]) -> str:
    """The backend to use given each one's calibrated time (``"torch"`` must be among them): the fastest of torch's
    own thread pool if it beats torch's default by more than :data:`MARGIN`; a :data:`FOREIGN_POOL` backend never."""
    native = {name: t for name, t in seconds.items() if name not in FOREIGN_POOL}
    best = min(native, key=native.get)
    return best if native[best] < (1 - MARGIN) * seconds["torch"] else "torch"


def gemm_rates(dtype: torch.dtype) -> dict[str, float]:
    """FLOP/s that each backend reached in this process's calibration for ``dtype`` at the current thread count
    (calibrating now if it has not run; empty when a backend was forced)."""
    key = (dtype, torch.get_num_threads())
    if key not in _last_rates and _forced is None and _env_backend() is None:
        _chosen[key] = _calibrate(dtype)
    return dict(_last_rates.get(key, {}))
