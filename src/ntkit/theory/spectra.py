r"""Eigenvalues and eigenfunctions of a kernel's integral operator.

A kernel k and an input distribution p define the operator (T f)(x) = E_{x'~p}[k(x, x') f(x')], with
eigenpairs T φ_i = λ_i φ_i, E_p[φ_i φ_j] = δ_ij. Two ways to get them:

* :func:`spectrum` (any kernel, any data): the Nyström estimate from a sample x_1…x_n ~ p. The eigenvalues of
  K/n estimate λ_i, and an eigenvector u_i of K gives φ_i(x_j) = √n·u_ij on the sample and, at a new point,
  φ_i(x) = k(x, X)·u_i / (√n·λ̂_i) (Williams & Seeger, *Using the Nyström method to speed up kernel machines*,
  NeurIPS 2001).
* :func:`sphere_spectrum` (dot-product kernels, uniform data on the sphere S^{d−1}): exact. With t = ⟨x, x'⟩ on
  the unit sphere the kernel is a function k(t) of the angle only, the spherical harmonics of degree ℓ are its
  eigenfunctions, and the Funk–Hecke formula gives their common eigenvalue

  .. math::  λ_ℓ = \frac{Γ(d/2)}{\sqrt{π}\,Γ((d−1)/2)} \int_{−1}^{1} k(t)\, P_ℓ^{(d)}(t)\,(1 − t^2)^{(d−3)/2}\,dt,

  with multiplicity N(d, ℓ) = (2ℓ + d − 2)/ℓ · C(ℓ + d − 3, ℓ − 1) (N(d, 0) = 1), where P_ℓ^{(d)} is the
  Legendre (Gegenbauer) polynomial of dimension d normalised to P_ℓ^{(d)}(1) = 1, so that
  k(t) = Σ_ℓ λ_ℓ N(d, ℓ) P_ℓ^{(d)}(t) (Smola, Óvári & Williamson, *Regularization with dot-product kernels*,
  NeurIPS 2000; Efthimiou & Frye, *Spherical Harmonics in p Dimensions*, 2014; Bietti & Mairal, *On the
  inductive bias of neural tangent kernels*, NeurIPS 2019). The integral is a Gauss–Jacobi rule with weight
  (1 − t²)^{(d−3)/2}; P_ℓ^{(d)} comes from its three-term recurrence
  (ℓ + d − 2) P_{ℓ+1} = (2ℓ + d − 2) t P_ℓ − ℓ P_{ℓ−1}.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ntkit.data.sphere import harmonic_multiplicity, legendre_values
from ntkit.empirical._common import memory_budget
from ntkit.infinite import Activation, Linear, Parallel, Residual, Sequential
from ntkit.infinite.layers import Layer, positive_int

KERNEL_KINDS = ("ntk", "nngp")


def _check_get(get: str) -> str:
    if get not in KERNEL_KINDS:
        raise ValueError(f"get must be one of {KERNEL_KINDS}; got {get!r}")
    return get


def _check_arch(arch) -> Layer:
    if not isinstance(arch, Layer):
        raise TypeError(f"arch must be an ntkit layer spec (e.g. nk.Sequential(nk.Linear(…), nk.ReLU(), …)); "
                        f"got {type(arch).__name__}")  # fmt: skip
    return arch


# ---------------------------------------------------------------------------------------------------------------
# Nyström


@dataclass(frozen=True)
class Spectrum:
    """Nyström eigenpairs of a kernel's integral operator, estimated on the sample ``x``.

    Attributes
    ----------
    eigenvalues:
        (M,) λ̂_i, the eigenvalues of K/n in decreasing order (float64, ≥ 0).
    eigenvectors:
        (n, M) φ_i(x_j) = √n·u_ij on the sample: E_sample[φ_i φ_j] = δ_ij.
    x:
        The sample, kept to extend the eigenfunctions to new points.
    arch, get:
        The architecture and which of its kernels ("ntk" or "nngp").
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    x: torch.Tensor
    arch: Layer
    get: str

    def eigenfunctions(self, x_new: torch.Tensor) -> torch.Tensor:
        r"""(N, M) φ_i(x_new) = k(x_new, X)·φ_i(X) / (n λ̂_i), the Nyström extension (0 where λ̂_i = 0)."""
        k = getattr(self.arch.kernel(x_new.to(self.x.dtype), self.x), self.get)
        n = self.x.shape[0]
        scale = torch.where(self.eigenvalues > 0, 1.0 / (n * self.eigenvalues), torch.zeros_like(self.eigenvalues))
        return (k.to(torch.float64) @ self.eigenvectors) * scale

    def coefficients(self, y: torch.Tensor) -> torch.Tensor:
        r"""(M,) or (M, O) target coefficients v_i = E_sample[φ_i(x) y(x)] = (1/n) Σ_j φ_i(x_j) y_j.

        ``y`` holds the target at the sample's points, (n,) or (n, O)."""
        y = torch.as_tensor(y, dtype=torch.float64)
        if y.shape[0] != self.x.shape[0] or y.ndim > 2:
            raise ValueError(f"y must be (n,) or (n, O) with n = {self.x.shape[0]} (the sample size); "
                             f"got {tuple(y.shape)}")  # fmt: skip
        return self.eigenvectors.T @ y / self.x.shape[0]


def spectrum(arch: Layer, x: torch.Tensor, n_eig: int | None = None, *, get: str = "ntk") -> Spectrum:
    r"""Nyström estimate of the eigenvalues and eigenfunctions of the kernel's integral operator.

    The eigenvalues of K/n, K_jk = k(x_j, x_k) on a sample x_j ~ p, converge to those of
    (T f)(x) = E_{x'~p}[k(x, x') f(x')] as n grows (Koltchinskii & Giné, *Random matrix approximation of
    spectra of integral operators*, Bernoulli 2000); eigenfunctions extend to new points by the Nyström formula.

    Parameters
    ----------
    arch:
        An ntkit layer spec (its infinite-width kernel is used).
    x:
        (n, …) sample from the input distribution, a floating-point tensor (float64 recommended).
    n_eig:
        How many leading eigenpairs to keep (None: all n).
    get:
        "ntk" (default) or "nngp".

    Returns
    -------
    Spectrum
        Eigenvalues (decreasing, float64; rounding-level negatives of the PSD matrix set to 0), eigenfunctions
        on the sample and a method to evaluate them elsewhere.

    Raises
    ------
    TypeError
        ``arch`` is not a layer spec, ``x`` not a floating-point tensor.
    ValueError
        ``n_eig`` not a positive int, ``get`` unknown, or K and its eigendecomposition would not fit in memory.

    References
    ----------
    Williams & Seeger, NeurIPS 2001; Bordelon, Canatar & Pehlevan, ICML 2020, §4 (spectra of real data).

    Examples
    --------
    >>> import torch, ntkit as nk
    >>> from ntkit.theory import spectrum
    >>> arch = nk.Sequential(nk.Linear(64), nk.ReLU(), nk.Linear(1))
    >>> s = spectrum(arch, torch.randn(50, 3, dtype=torch.float64), n_eig=5)
    >>> s.eigenvalues.shape, s.eigenvectors.shape
    (torch.Size([5]), torch.Size([50, 5]))
    """
    _check_arch(arch)
    _check_get(get)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor; got {getattr(x, 'dtype', type(x).__name__)}")
    n = x.shape[0] if x.ndim else 0
    if n_eig is not None:
        positive_int("n_eig", n_eig)
    need = 4 * n * n * 8  # K, its float64 copy, the eigenvectors and LAPACK's workspace
    budget = memory_budget(x.device)
    if need > budget:
        raise ValueError(f"x has n = {n} examples: the n×n kernel and its eigendecomposition need about "
                         f"{need / 2**30:.1f} GiB, more than the {budget / 2**30:.1f} GiB budget; use a smaller "
                         "sample")  # fmt: skip
    k = getattr(arch.kernel(x), get)
    if k.shape != (n, n):
        raise ValueError(f"the architecture's kernel must be one (n, n) matrix (reduce spatial axes with Flatten or "
                         f"GlobalAvgPool); got shape {tuple(k.shape)}")  # fmt: skip
    evals, evecs = torch.linalg.eigh(k.detach().to(torch.float64) / n)
    evals, evecs = evals.flip(0).clamp_min(0.0), evecs.flip(1)
    m = n if n_eig is None else min(n_eig, n)
    return Spectrum(evals[:m].contiguous(), (evecs[:, :m] * math.sqrt(n)).contiguous(), x.detach(), arch, get)


# ---------------------------------------------------------------------------------------------------------------
# The sphere


@functools.lru_cache(maxsize=16)
def _jacobi_rule(order: int, exponent: float) -> tuple[np.ndarray, np.ndarray]:
    from scipy.special import roots_jacobi

    nodes, weights = roots_jacobi(order, exponent, exponent)
    return nodes, weights


@dataclass(frozen=True)
class SphereSpectrum:
    """Exact eigenvalues of a dot-product kernel on the uniform sphere S^{d−1}, per harmonic degree.

    Attributes
    ----------
    degrees:
        (L + 1,) ℓ = 0…L.
    eigenvalues:
        (L + 1,) λ_ℓ, each shared by the N(d, ℓ) harmonics of degree ℓ (float64).
    multiplicities:
        (L + 1,) N(d, ℓ).
    dim:
        d, the ambient dimension.
    trace:
        k(1) = Σ_ℓ N(d, ℓ) λ_ℓ over all degrees (the kernel on the diagonal).
    tail:
        trace − Σ_{ℓ ≤ L} N(d, ℓ) λ_ℓ: the part of the trace in degrees above L (feed it to
        :func:`ntkit.theory.learning_curve` as ``tail_trace``).
    """

    degrees: np.ndarray
    eigenvalues: np.ndarray
    multiplicities: np.ndarray
    dim: int
    trace: float
    tail: float

    def expanded(self) -> np.ndarray:
        """Every eigenvalue repeated by its multiplicity, in degree order (Σ multiplicities entries)."""
        return np.repeat(self.eigenvalues, self.multiplicities)


def angular_spectrum(fn: Callable[[np.ndarray], np.ndarray], dim: int, max_degree: int,
                     quadrature: int | None = None) -> SphereSpectrum:  # fmt: skip
    r"""Funk–Hecke eigenvalues λ_ℓ, ℓ = 0…``max_degree``, of the dot-product kernel k(x, x') = fn(⟨x, x'⟩) on
    the uniform unit sphere S^{dim−1}.

    λ_ℓ = Γ(d/2)/(√π Γ((d−1)/2)) ∫ fn(t) P_ℓ^{(d)}(t) (1 − t²)^{(d−3)/2} dt by a ``quadrature``-node
    Gauss–Jacobi rule (default max(4096, 8·max_degree)); exact for polynomials of degree < 2·quadrature − ℓ. A
    kernel with an algebraic singularity at t = ±1 (the ReLU kernels' (1 − t)^{1/2}) converges like a power of the
    number of nodes; 4096 nodes leave errors near 1e−12·k(1) for the ReLU NTK (checked in tests/theory).

    ``fn`` maps a float64 numpy array of t in [−1, 1] to k(t). Negative values within the rounding of the sum,
    quadrature·ε·max|k|, are set to 0 (exact zeros such as a bias-free ReLU kernel's odd degrees ≥ 3 come out as
    ±1e−14); larger negatives are kept (fn is then not a positive semi-definite kernel). See the module docstring
    for the formula's sources.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an int ≥ 2 (the sphere S^(dim−1) lives in R^dim); got {dim!r}")
    if isinstance(max_degree, bool) or not isinstance(max_degree, int) or max_degree < 0:
        raise ValueError(f"max_degree must be an int ≥ 0; got {max_degree!r}")
    order = max(4096, 8 * max_degree) if quadrature is None else positive_int("quadrature", quadrature)
    nodes, weights = _jacobi_rule(order, (dim - 3) / 2)
    values = np.asarray(fn(nodes), dtype=np.float64).reshape(-1)
    if values.shape != nodes.shape or not np.all(np.isfinite(values)):
        raise ValueError("the angular function must return one finite value per node t in [−1, 1]")
    norm = math.exp(math.lgamma(dim / 2) - math.lgamma((dim - 1) / 2)) / math.sqrt(math.pi)
    eigenvalues = norm * (legendre_values(dim, max_degree, nodes) @ (weights * values))
    # rounding: a sum of `order` terms of size ≤ max|k|·weight (weights normalised to 1) is exact to order·ε·max|k|;
    # negatives within that are zeros (e.g. the odd degrees ≥ 3 of a bias-free ReLU kernel), not a sign of non-PSD
    rounding = order * np.finfo(np.float64).eps * float(np.abs(values).max())
    eigenvalues = np.where((eigenvalues < 0) & (eigenvalues >= -rounding), 0.0, eigenvalues)
    multiplicities = np.array([harmonic_multiplicity(dim, ell) for ell in range(max_degree + 1)], dtype=np.int64)
    trace = float(np.asarray(fn(np.ones(1)), dtype=np.float64).reshape(-1)[0])
    tail = trace - float(np.sum(multiplicities * eigenvalues))
    return SphereSpectrum(np.arange(max_degree + 1), eigenvalues, multiplicities, dim, trace, tail)


#: Specs whose kernel on vectors depends on the inputs only through their inner products (and norms).
_DOT_PRODUCT_LEAVES = (Linear, Activation)


def _refuse_non_dot_product(layer: Layer, path: str = "arch") -> None:
    """Raise a ValueError naming the first layer that makes the kernel depend on more than ⟨x, x'⟩."""
    if isinstance(layer, Sequential | Residual):
        for i, sub in enumerate(layer.layers):
            _refuse_non_dot_product(sub, f"{path}.layers[{i}]")
        return
    if isinstance(layer, Parallel):
        for i, sub in enumerate(layer.branches):
            _refuse_non_dot_product(sub, f"{path}.branches[{i}]")
        return
    if isinstance(layer, _DOT_PRODUCT_LEAVES):
        return
    name = type(layer).__name__
    why = {
        "LayerNorm": "it centres each input over its features, which no rotation of the sphere commutes with",
        "Flatten": "it expects signals or images, whose kernels depend on positions, not on ⟨x, x'⟩ alone",
    }.get(name, "its kernel depends on the positions within each input (a window, a pool), not only on ⟨x, x'⟩")
    raise ValueError(f"sphere_spectrum needs a dot-product kernel (Linear layers, elementwise activations and their "
                     f"sums/residuals on vectors); {path} is {name}: {why}. Use spectrum(arch, x) (Nyström) "
                     "instead")  # fmt: skip


def angular_function(
    arch: Layer, dim: int, get: str = "ntk", radius: float = 1.0
) -> Callable[[np.ndarray], np.ndarray]:
    """t ↦ k(x, x') for x, x' on the sphere of ``radius`` in R^dim with ⟨x, x'⟩ = radius²·t (the spec's kernel
    evaluated on e₁ and t·e₁ + √(1 − t²)·e₂, in float64)."""

    def fn(t: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(np.asarray(t), dtype=torch.float64).reshape(-1)
        x1 = torch.zeros(1, dim, dtype=torch.float64)
        x1[0, 0] = radius
        x2 = torch.zeros(t.numel(), dim, dtype=torch.float64)
        x2[:, 0] = radius * t
        x2[:, 1] = radius * torch.sqrt((1 - t * t).clamp_min(0.0))
        return getattr(arch.kernel(x1, x2), get).reshape(-1).numpy()

    return fn


def sphere_spectrum(arch: Layer, dim: int, max_degree: int, *, get: str = "ntk", radius: float = 1.0,
                    quadrature: int | None = None) -> SphereSpectrum:  # fmt: skip
    r"""Exact eigenvalues, per spherical-harmonic degree, of a dot-product kernel on the uniform sphere.

    The spec's kernel between two points of the sphere of ``radius`` in R^dim depends only on t = cos(angle);
    the Funk–Hecke formula (module docstring) turns that angular function into
    λ_ℓ = Γ(d/2)/(√π Γ((d−1)/2)) ∫ k(t) P_ℓ^{(d)}(t) (1 − t²)^{(d−3)/2} dt, with multiplicity N(d, ℓ).
    These are the eigenvalues that :func:`spectrum` estimates from a uniform sample of the sphere.

    Parameters
    ----------
    arch:
        A spec built from Linear layers, elementwise activations, Sequential, Residual and Parallel.
    dim:
        d ≥ 2: inputs are vectors in R^d on the sphere S^{d−1}.
    max_degree:
        Highest degree L; the trace of the degrees above it is returned as ``tail``.
    get:
        "ntk" (default) or "nngp".
    radius:
        Radius of the sphere the inputs lie on (the kernels are not scale-invariant when biases are present).
    quadrature:
        Gauss–Jacobi nodes (default max(4096, 8·max_degree)).

    Returns
    -------
    SphereSpectrum

    Raises
    ------
    TypeError
        ``arch`` is not a layer spec.
    ValueError
        ``arch`` is not a dot-product kernel (Conv, pooling, Flatten, LayerNorm: the message says why), ``dim`` < 2,
        ``max_degree`` < 0, ``radius`` ≤ 0, or ``get`` unknown.

    References
    ----------
    Smola, Óvári & Williamson, NeurIPS 2000; Bietti & Mairal, NeurIPS 2019; Bordelon, Canatar & Pehlevan, ICML
    2020 (their spherical experiments).

    Examples
    --------
    >>> import ntkit as nk
    >>> from ntkit.theory import sphere_spectrum
    >>> s = sphere_spectrum(nk.Sequential(nk.Linear(1), nk.ReLU(), nk.Linear(1)), dim=3, max_degree=4)
    >>> [int(m) for m in s.multiplicities]
    [1, 3, 5, 7, 9]
    """
    _check_arch(arch)
    _check_get(get)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an int ≥ 2 (the sphere S^(dim−1) lives in R^dim); got {dim!r}")
    if not (isinstance(radius, int | float) and math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be a finite number > 0; got {radius!r}")
    _refuse_non_dot_product(arch)
    arch.out_shape((dim,))
    return angular_spectrum(angular_function(arch, dim, get, float(radius)), dim, max_degree, quadrature)
