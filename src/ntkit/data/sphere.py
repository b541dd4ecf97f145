r"""Uniform points on the sphere and targets made of spherical harmonics of chosen degrees.

A zonal function P_ℓ^{(d)}(⟨x, z⟩) (the dimension-d Legendre polynomial, P(1) = 1) is a spherical harmonic of
degree ℓ in x, and E_x[P_ℓ(⟨x, z⟩) P_ℓ(⟨x, z'⟩)] = P_ℓ(⟨z, z'⟩)/N(d, ℓ) for x uniform on S^{d−1} (the
reproducing property behind the Funk–Hecke formula; Efthimiou & Frye, *Spherical Harmonics in p Dimensions*,
2014, §4). So Y(x) = Σ_j a_j P_ℓ(⟨x, z_j⟩) with random centres z_j is a random harmonic of degree ℓ whose mean
square is exactly aᵀG a/N(d, ℓ), G_jk = P_ℓ(⟨z_j, z_k⟩): dividing by its square root gives E[Y²] = 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


def harmonic_multiplicity(dim: int, degree: int) -> int:
    """N(d, ℓ): the dimension of the space of spherical harmonics of degree ℓ on S^{d−1} ⊂ R^d.

    N(d, 0) = 1 and N(d, ℓ) = (2ℓ + d − 2)/ℓ · C(ℓ + d − 3, ℓ − 1); e.g. 2ℓ + 1 on S² (d = 3), 2 on the circle.
    """
    if degree == 0:
        return 1
    return (2 * degree + dim - 2) * math.comb(degree + dim - 3, degree - 1) // degree


def legendre_values(dim: int, max_degree: int, t: np.ndarray) -> np.ndarray:
    r"""(max_degree + 1, len(t)) P_ℓ^{(d)}(t): Legendre polynomials of dimension d, P_ℓ^{(d)}(1) = 1.

    Three-term recurrence (ℓ + d − 2) P_{ℓ+1} = (2ℓ + d − 2) t P_ℓ − ℓ P_{ℓ−1}, P_0 = 1, P_1 = t (d = 3 gives
    Legendre's, d = 2 Chebyshev's T_ℓ; stable on [−1, 1])."""
    t = np.asarray(t, dtype=np.float64)
    p = np.empty((max_degree + 1, t.size))
    p[0] = 1.0
    if max_degree >= 1:
        p[1] = t
    for ell in range(1, max_degree):
        p[ell + 1] = ((2 * ell + dim - 2) * t * p[ell] - ell * p[ell - 1]) / (ell + dim - 2)
    return p


def sphere_points(
    n: int, dim: int, seed: int | torch.Generator = 0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """(n, dim) points uniform on the unit sphere S^{dim−1}: Gaussian vectors divided by their norms."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an int ≥ 2; got {dim!r}")
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=dtype)
    return x / x.norm(dim=1, keepdim=True)


@dataclass(frozen=True)
class HarmonicTarget:
    """f(x) = Σ_ℓ √power_ℓ · Y_ℓ(x), each Y_ℓ a random degree-ℓ spherical harmonic with E[Y_ℓ²] = 1 on the
    uniform sphere, so the target's power in degree ℓ is exactly ``powers[ℓ]`` (module docstring)."""

    dim: int
    degrees: tuple[int, ...]
    powers: tuple[float, ...]
    centres: tuple[torch.Tensor, ...]
    weights: tuple[torch.Tensor, ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(n,) f(x) for unit vectors x (n, dim)."""
        x = torch.as_tensor(x, dtype=torch.float64)
        y = torch.zeros(x.shape[0], dtype=torch.float64)
        for degree, power, z, a in zip(self.degrees, self.powers, self.centres, self.weights, strict=True):
            t = (x @ z.T).clamp(-1.0, 1.0).numpy()
            p = torch.as_tensor(legendre_values(self.dim, degree, t.reshape(-1))[degree]).reshape(t.shape)
            y += math.sqrt(power) * (p @ a)
        return y


def harmonic_target(dim: int, degrees: Sequence[int], powers: Sequence[float], seed: int = 0,
                    n_centres: int = 16) -> HarmonicTarget:  # fmt: skip
    """A random target on S^{dim−1} with power ``powers[i]`` in spherical-harmonic degree ``degrees[i]``.

    Examples
    --------
    >>> f = harmonic_target(3, degrees=[1, 2], powers=[1.0, 0.5])
    >>> f(sphere_points(4, 3)).shape
    torch.Size([4])
    """
    degrees, powers = tuple(int(d) for d in degrees), tuple(float(p) for p in powers)
    if len(degrees) != len(powers) or len(set(degrees)) != len(degrees) or any(d < 0 for d in degrees):
        raise ValueError(f"degrees must be distinct ints ≥ 0, one per power; got {degrees} and {powers}")
    if any(not (math.isfinite(p) and p >= 0) for p in powers):
        raise ValueError(f"powers must be finite numbers ≥ 0; got {powers}")
    g = torch.Generator().manual_seed(seed)
    centres, weights = [], []
    for degree in degrees:
        z = sphere_points(n_centres, dim, g)
        a = torch.randn(n_centres, generator=g, dtype=torch.float64)
        gram = legendre_values(dim, degree, (z @ z.T).clamp(-1, 1).numpy().reshape(-1))[degree]
        mean_square = float(a @ torch.as_tensor(gram.reshape(n_centres, n_centres)) @ a) / harmonic_multiplicity(
            dim, degree
        )
        centres.append(z)
        weights.append(a / math.sqrt(mean_square))
    return HarmonicTarget(dim, degrees, powers, tuple(centres), tuple(weights))


__all__ = ["sphere_points", "harmonic_target", "HarmonicTarget", "harmonic_multiplicity", "legendre_values"]
