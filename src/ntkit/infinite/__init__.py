"""The infinite-width limit: kernels that networks converge to as their widths grow."""

from ntkit.infinite.activations import relu_kernels

__all__ = ["relu_kernels"]
