"""ntkit: Neural Tangent Kernels for PyTorch.

>>> import ntkit
>>> ntkit.empirical_ntk  # doctest: +ELLIPSIS
<function empirical_ntk at ...>
"""

from ntkit.empirical import empirical_ntk, ntk_vector_product

__version__ = "0.1.0"

__all__ = ["empirical_ntk", "ntk_vector_product", "__version__"]
