"""ntkit: Neural Tangent Kernels for PyTorch."""

__version__ = "0.1.0"
