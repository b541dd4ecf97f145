"""The empirical NTK of a finite model: Θ(x, x') = ∇θf(x)·∇θf(x')ᵀ."""

from ntkit.empirical.ntk import empirical_ntk
from ntkit.empirical.products import ntk_vector_product

__all__ = ["empirical_ntk", "ntk_vector_product"]
