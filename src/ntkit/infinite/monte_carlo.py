"""Monte Carlo estimates of the infinite-width kernels, for any architecture: average its finite networks.

For networks f_s drawn independently (s = 1..S) with O outputs each,

    K̂(x, x') = (1/S) Σ_s k_s(x, x'),   k_s = (1/O) Σ_i f_{s,i}(x) f_{s,i}(x'),
    Θ̂(x, x') = (1/S) Σ_s θ_s(x, x'),   θ_s = the empirical NTK of f_s (``output="mean"``),

with the standard error of each entry, sd_s(k_s)/√S (sample standard deviation, by Welford's update). As the
widths grow k_s → K and θ_s → Θ (Neal 1996; Jacot et
al. 2018), so the estimates converge to the kernels for layers that have no closed form (max pooling, softmax,
attention with 1/√d_k scaling), as neural-tangents' ``monte_carlo_kernel_fn`` does (Novak et al. 2020).

Randomness: sample s is built from the seed ``SeedSequence(seed, spawn_key=(s,))``: one seed per network, fixed
by (seed, s) alone, so the estimate does not depend on ``batch`` and the first S samples of a longer run are the
same networks. With x2 = None each sample is mirrored, (k_s + k_sᵀ)/2, so the estimate is exactly symmetric.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ntkit._validation import kernel_kinds
from ntkit.empirical import empirical_ntk
from ntkit.infinite.layers import Layer, _check_inputs

KINDS = ("nngp", "ntk")


@dataclass(frozen=True)
class MonteCarloKernel:
    """Seed averages (N1, N2) and their standard errors; ``None`` for a kind that was not asked for."""

    nngp: torch.Tensor | None
    ntk: torch.Tensor | None
    nngp_stderr: torch.Tensor | None
    ntk_stderr: torch.Tensor | None
    n_samples: int


def sample_seed(seed: int, sample: int) -> int:
    """The seed of network ``sample``: 63 bits of ``numpy.random.SeedSequence(seed, spawn_key=(sample,))``."""
    return int(np.random.SeedSequence(seed, spawn_key=(sample,)).generate_state(2, np.uint64)[0] >> np.uint64(1))


def _outputs(model: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.no_grad():
        out = torch.cat([model(x[i : i + batch]) for i in range(0, x.shape[0], batch)])
    return out.reshape(x.shape[0], -1)


def _signature(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]


def monte_carlo_kernel(arch_or_factory: Layer | Callable[[int], nn.Module], x1: torch.Tensor,
                       x2: torch.Tensor | None = None, n_samples: int = 64, seed: int = 0,
                       get: str | tuple[str, ...] = KINDS, batch: int = 8,
                       progress: bool = True) -> MonteCarloKernel:  # fmt: skip
    """Estimate the NNGP and NTK of an architecture by averaging ``n_samples`` random finite networks.

    Parameters
    ----------
    arch_or_factory:
        An ntkit spec (each sample is ``arch.build(x1.shape[1:], seed=s, dtype=x1.dtype)``) or a callable
        ``seed -> nn.Module`` returning networks of one architecture (same parameter names and shapes).
    x1, x2:
        Inputs (N1, ...) and (N2, ...); x2=None means x1 (the estimate is then exactly symmetric).
    n_samples:
        Networks to average, ≥ 2 (the standard error needs two).
    seed:
        Base seed; network s uses :func:`sample_seed` (seed, s).
    get:
        "nngp", "ntk" or both.
    batch:
        Examples per forward pass and per empirical-NTK block; changes memory and speed, not the result.
    progress:
        Show a progress bar over the samples.

    Returns
    -------
    MonteCarloKernel with (N1, N2) estimates and standard errors in x1's dtype.

    Raises
    ------
    TypeError
        If arch_or_factory is neither a spec nor a callable, or a factory returns no ``nn.Module``.
    ValueError
        If n_samples < 2, batch < 1, get is unknown, inputs are bad, or the factory's networks differ in
        architecture between seeds.

    References
    ----------
    Novak et al., *Neural Tangents: Fast and Easy Infinite Neural Networks in Python*, ICLR 2020
    (``monte_carlo_kernel_fn``).

    Example
    -------
    >>> import torch, ntkit as nk
    >>> arch = nk.Sequential(nk.Linear(64), nk.ReLU(), nk.Linear(4))
    >>> mc = nk.monte_carlo_kernel(arch, torch.randn(3, 2, dtype=torch.float64), n_samples=4, progress=False)
    >>> mc.ntk.shape, mc.ntk_stderr.shape
    (torch.Size([3, 3]), torch.Size([3, 3]))
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int):
        raise TypeError(f"n_samples must be an int; got {type(n_samples).__name__}")
    if n_samples < 2:
        raise ValueError(f"n_samples must be ≥ 2 (a standard error needs two samples); got {n_samples}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int; got {batch!r}")
    kinds = kernel_kinds(get)
    _check_inputs(x1, x2)
    if isinstance(arch_or_factory, Layer):
        arch = arch_or_factory
        arch.out_shape(tuple(x1.shape[1:]))

        def make(s: int) -> nn.Module:
            return arch.build(tuple(x1.shape[1:]), seed=s, dtype=x1.dtype)
    elif callable(arch_or_factory):
        make = arch_or_factory
    else:
        raise TypeError(f"arch_or_factory must be an ntkit spec or a callable seed -> nn.Module; "
                        f"got {type(arch_or_factory).__name__}")  # fmt: skip

    means: dict[str, torch.Tensor] = {}
    m2s: dict[str, torch.Tensor] = {}  # Welford's running sums of squared deviations
    first = None
    for s in tqdm(range(n_samples), disable=not progress, desc="monte_carlo_kernel", leave=False):
        model = make(sample_seed(seed, s))
        if not isinstance(model, nn.Module):
            raise TypeError(f"the factory must return an nn.Module; got {type(model).__name__} for sample {s}")
        signature = _signature(model)
        if first is None:
            first = signature
        elif signature != first:
            raise ValueError(f"the factory returned a different architecture for sample {s} than for sample 0 "
                             f"(parameters {signature} vs {first}); every seed must give the same "
                             "architecture")  # fmt: skip
        for kind in kinds:
            value = _sample(model, kind, x1, x2, batch)
            if kind not in means:
                means[kind], m2s[kind] = value.clone(), torch.zeros_like(value)
            else:
                delta = value - means[kind]
                means[kind] += delta / (s + 1)
                m2s[kind] += delta * (value - means[kind])
    result = {}
    for kind in KINDS:
        if kind not in kinds:
            result[kind] = result[f"{kind}_stderr"] = None
            continue
        result[kind] = means[kind]
        result[f"{kind}_stderr"] = (m2s[kind] / ((n_samples - 1) * n_samples)).sqrt_()
    return MonteCarloKernel(n_samples=n_samples, **result)


def _sample(model: nn.Module, kind: str, x1: torch.Tensor, x2: torch.Tensor | None, batch: int) -> torch.Tensor:
    """k_s or θ_s of one network, (N1, N2), mirrored to exact symmetry when x2 is None."""
    if kind == "ntk":
        value = empirical_ntk(model, x1, x2, output="mean", batch_size=batch).detach()
    else:
        f1 = _outputs(model, x1, batch)
        f2 = f1 if x2 is None else _outputs(model, x2, batch)
        value = f1 @ f2.T / f1.shape[1]
    if x2 is None:
        value = 0.5 * (value + value.T)
    return value.to(x1.dtype)
