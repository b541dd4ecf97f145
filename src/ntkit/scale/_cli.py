"""``ntkit kernel`` and ``ntkit solve``: the command-line faces of :mod:`ntkit.scale` (imports dask only when run)."""

from __future__ import annotations

import argparse
import importlib
import os
import runpy
import sys


def load_spec(spec: str):
    """The architecture named by SPEC: ``package.module:attr`` or a .py file that defines ``arch``."""
    if spec.endswith(".py"):
        if not os.path.isfile(spec):
            raise ValueError(f"SPEC {spec!r}: no such file")
        namespace = runpy.run_path(spec)
        if "arch" not in namespace:
            raise ValueError(f"SPEC {spec!r} must define a variable named `arch` (an ntkit spec or nn.Module)")
        return namespace["arch"]
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"SPEC must be 'package.module:attr' or a .py file defining `arch`; got {spec!r}")
    try:
        obj = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"SPEC {spec!r}: cannot import {module!r} ({exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"SPEC {spec!r}: {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _load_array(option: str, path: str):
    import numpy as np
    import torch

    try:
        return torch.from_numpy(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{option} {path!r}: cannot read a .npy array ({exc})") from None


def _kernel(args: argparse.Namespace) -> int:
    import torch

    from ntkit import scale

    try:
        arch = load_spec(args.spec)
        x1 = _load_array("--x", args.x)
        x2 = None if args.x2 is None else _load_array("--x2", args.x2)
        dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
        k = scale.kernel(arch, x1, x2, path=args.out, get=args.get, tile=args.tile, dtype=dtype,
                         client=args.scheduler, n_workers=args.workers)  # fmt: skip
    except (TypeError, ValueError, ConnectionError, OSError) as exc:
        print(f"ntkit kernel: {exc}", file=sys.stderr)
        return 2
    print(f"{k.path}: {k.shape[0]} x {k.shape[1]} {', '.join(k.layout.kinds)}, {k.done}/{k.total} tiles")
    return 0


def _solve(args: argparse.Namespace) -> int:
    import numpy as np

    from ntkit import scale

    try:
        k = scale.TiledKernel(args.store)
        y = _load_array("--y", args.y)
        fit = scale.solve(getattr(k, args.kind), y, diag_reg=args.diag_reg, rank=min(args.rank, k.shape[0]),
                          preconditioner=None if args.no_preconditioner else "nystrom", landmarks=args.landmarks,
                          tol=args.tol, max_iter=args.max_iter, client=args.scheduler)  # fmt: skip
    except scale.ConvergenceError as exc:
        print(f"ntkit solve: {exc}", file=sys.stderr)
        return 1
    except (TypeError, ValueError, FileNotFoundError, OSError) as exc:
        print(f"ntkit solve: {exc}", file=sys.stderr)
        return 2
    np.save(args.out, fit.alpha.numpy())
    print(f"{args.out}: alpha {tuple(fit.alpha.shape)}, {fit.iterations} CG iterations, relative residual "
          f"{fit.residual:.3g}")  # fmt: skip
    return 0


def add_commands(sub) -> None:
    """Register ``kernel`` and ``solve`` on the ``ntkit`` parser's subparsers."""
    from ntkit.cli import _positive

    kernel = sub.add_parser("kernel", help="a kernel matrix in resumable tiles (zarr store, dask workers)")
    kernel.add_argument("spec", metavar="SPEC", help="package.module:attr, or a .py file defining `arch`")
    kernel.add_argument("--x", required=True, help="inputs, a .npy file (N, ...)")
    kernel.add_argument("--x2", default=None, help="second inputs (.npy); default: the kernel of --x with itself")
    kernel.add_argument("--out", required=True, help="the store: a folder such as K.zarr, or an fsspec URL")
    kernel.add_argument("--scheduler", default=None, help="dask scheduler address (default: workers on this machine)")
    kernel.add_argument(
        "--workers", type=_positive("--workers"), default=None, help="local workers (default: 1 per core)"
    )
    kernel.add_argument("--tile", type=_positive("--tile"), default=2048, help="examples per tile side (default 2048)")
    kernel.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="store dtype")
    kernel.add_argument("--get", choices=("nngp", "ntk"), default=None, help="one kernel only (default both)")
    kernel.set_defaults(run=_kernel)
    solve = sub.add_parser("solve", help="kernel regression on a store: Nyström-preconditioned CG")
    solve.add_argument("store", metavar="K.zarr", help="a store written by `ntkit kernel`")
    solve.add_argument("--y", required=True, help="targets, a .npy file (N,) or (N, O)")
    solve.add_argument("--diag-reg", type=float, default=1e-4, help="ridge relative to mean(diag K) (default 1e-4)")
    solve.add_argument("--out", required=True, help="where to save alpha (.npy)")
    solve.add_argument("--kind", choices=("ntk", "nngp"), default="ntk", help="which kernel (default ntk)")
    solve.add_argument("--rank", type=_positive("--rank"), default=1000, help="Nyström landmarks (default 1000)")
    solve.add_argument("--landmarks", choices=("random", "pivoted"), default="random", help="landmark choice")
    solve.add_argument("--no-preconditioner", action="store_true", help="plain CG")
    solve.add_argument("--scheduler", default=None, help="dask scheduler address: CG products on its workers "
                       "(default: threads of this process)")  # fmt: skip
    solve.add_argument("--tol", type=float, default=1e-6, help="relative residual to reach (default 1e-6)")
    solve.add_argument("--max-iter", type=_positive("--max-iter"), default=500, help="CG iterations allowed")
    solve.set_defaults(run=_solve)
