"""Kernels larger than memory and solvers that never hold them (issue 12).

``kernel`` computes a kernel matrix in resumable tiles on dask.distributed workers into a zarr store,
``solve`` runs Nyström-preconditioned conjugate gradients whose products stream the store's tiles, and
``predict`` streams K(x_test, x_train) tiles against the solution. Needs the ``[scale]`` extra.
"""

from ntkit.scale.kernel import TiledKernel, kernel
from ntkit.scale.predict import predict
from ntkit.scale.solve import ConvergenceError, SolveResult, solve

__all__ = ["ConvergenceError", "SolveResult", "TiledKernel", "kernel", "predict", "solve"]
