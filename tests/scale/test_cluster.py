"""A real multi-process cluster (issue 12): `dask scheduler` and two `dask worker` processes on 127.0.0.1, and the
kernel computed through `ntkit kernel --scheduler` and solved with `ntkit solve --scheduler` (CG products on the
workers). Then `ntkit solve` in a driver whose peak resident memory is
measured: it must stay far below the dense matrix (it streams tiles and holds (N, rank) + a few tiles)."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ntkit as nk
from ntkit import scale
from ntkit.scale._cli import load_spec

from .conftest import ntkit_cli, subprocess_env

N, TILE, RANK, REG, TOL = 4000, 500, 50, 1e-2, 1e-7
SPEC = "import ntkit as nk\narch = nk.Sequential(nk.Linear(512, b_std=0.1), nk.ReLU(), nk.Linear(1, b_std=0.1))\n"
#: The driver of `ntkit solve`, reporting its resident memory after the imports and its peak during the solve.
MEASURED_SOLVE = """
import re, sys
import numpy, torch, zarr, dask.array, ntkit.scale
from ntkit.cli import build_parser, main
build_parser()  # imports what the other subcommands need, so that it is not counted below
def kib(field):
    return int(re.search(rf"^{field}:\\s+(\\d+)", open("/proc/self/status").read(), re.M).group(1))
try:
    open("/proc/self/clear_refs", "w").write("5")  # peak := current, so imports do not count
except OSError:
    pass
base = kib("VmRSS")
code = main(sys.argv[1:])
print("RSS_KIB", base, kib("VmHWM"))
sys.exit(code)
"""

#: glibc keeps freed blocks above its dynamic mmap threshold in per-thread arenas, so a process's peak resident set
#: then counts memory it no longer uses (here +25 MiB); a fixed threshold returns every block ≥ 128 KiB at free.
MEASURING_ENV = subprocess_env(MALLOC_MMAP_THRESHOLD_="131072")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
    dask = str(Path(sys.executable).with_name("dask"))
    address = f"tcp://127.0.0.1:{_free_port()}"
    env = subprocess_env()
    port = address.rsplit(":", 1)[1]
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]  # fmt: skip
    try:
        for i in range(2):
            procs.append(subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--no-dashboard",
                                           "--local-directory", str(tmp_path / f"w{i}"), "--name", f"w{i}"],
                                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        from distributed import Client

        deadline = time.monotonic() + 90
        while True:
            try:
                with Client(address, timeout=5, set_as_default=False) as c:
                    c.wait_for_workers(2, timeout=90)
                break
            except OSError:
                assert time.monotonic() < deadline, "the scheduler did not start"
                time.sleep(0.5)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _sphere(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.normalize(torch.randn(n, 5, generator=g, dtype=torch.float64), dim=1)


def test_kernel_through_a_scheduler_address(tmp_path, cluster):
    x = _sphere(300)
    np.save(tmp_path / "x.npy", x.numpy())
    (tmp_path / "spec.py").write_text(SPEC)
    out = tmp_path / "K.zarr"
    made = subprocess.run(ntkit_cli("kernel", str(tmp_path / "spec.py"), "--x", str(tmp_path / "x.npy"), "--out",
                                    str(out), "--tile", "100", "--dtype", "float64", "--scheduler", cluster),
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "6/6 tiles" in made.stdout and "6/6" in made.stderr  # the report and the progress bar
    k = scale.TiledKernel(out)
    reference = load_spec(str(tmp_path / "spec.py")).kernel(x, batch_size=100)
    for kind in ("nngp", "ntk"):
        assert torch.equal(torch.from_numpy(getattr(k, kind).compute(scheduler="sync")), getattr(reference, kind))
    # the CG products on the same workers (`ntkit solve --scheduler`), against a direct float64 solve
    y = torch.sin(3 * x[:, 0]) + x[:, 1]
    np.save(tmp_path / "y.npy", y.numpy())
    solved = subprocess.run(ntkit_cli("solve", str(out), "--y", str(tmp_path / "y.npy"), "--diag-reg", str(REG),
                                      "--rank", str(RANK), "--tol", str(TOL), "--out", str(tmp_path / "alpha.npy"),
                                      "--scheduler", cluster),
                            env=subprocess_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert solved.returncode == 0, solved.stderr
    dense = reference.ntk
    alpha = torch.from_numpy(np.load(tmp_path / "alpha.npy"))
    lam = REG * float(dense.diagonal().mean())
    direct = torch.linalg.solve(dense + lam * torch.eye(len(x), dtype=torch.float64), y)
    assert float((dense @ (alpha - direct)).norm() / y.norm()) <= 2 * TOL  # ‖K(α − α*)‖ ≤ ‖r‖ ≤ tol‖y‖


def test_streamed_solve_in_bounded_driver_memory(tmp_path, client):
    x = _sphere(N)
    y = torch.sin(3 * x[:, 0]) + x[:, 1]
    np.save(tmp_path / "y.npy", y.numpy())
    arch = nk.Sequential(nk.Linear(512, b_std=0.1), nk.ReLU(), nk.Linear(1, b_std=0.1))
    k = scale.kernel(arch, x, path=tmp_path / "K.zarr", get="ntk", tile=TILE, dtype=torch.float64, client=client,
                     progress=False)  # fmt: skip
    solved = subprocess.run([sys.executable, "-c", MEASURED_SOLVE, "solve", str(k.path), "--y", str(tmp_path / "y.npy"),
                             "--diag-reg", str(REG), "--rank", str(RANK), "--tol", str(TOL), "--out",
                             str(tmp_path / "alpha.npy")], env=MEASURING_ENV, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert solved.returncode == 0, solved.stderr
    base, peak = map(int, solved.stdout.split("RSS_KIB")[1].split())
    dense_kib = N * N * 8 // 1024
    assert (peak - base) < dense_kib / 4, f"solve's driver grew by {peak - base} KiB; the matrix is {dense_kib} KiB"
    dense = torch.from_numpy(k.ntk.compute(scheduler="sync"))
    alpha = torch.from_numpy(np.load(tmp_path / "alpha.npy"))
    lam = REG * float(dense.diagonal().mean())
    direct = torch.linalg.solve(dense + lam * torch.eye(N, dtype=torch.float64), y)
    assert float((dense @ (alpha - direct)).norm() / y.norm()) <= 2 * TOL  # ‖K(α − α*)‖ ≤ ‖r‖ ≤ tol‖y‖


def test_cli_refuses_bad_specs_and_tiles(tmp_path, capsys):
    with pytest.raises(SystemExit):
        nk_main = __import__("ntkit.cli", fromlist=["main"]).main
        nk_main(["kernel", "x:y", "--x", "a.npy", "--out", "K.zarr", "--tile", "0"])
    assert "--tile must be a positive integer" in capsys.readouterr().err
    for spec, words in [("nomodule", "SPEC must be 'package.module:attr'"), ("ntkit:NoSuchThing", "has no attribute"),
                        (str(tmp_path / "none.py"), "no such file")]:  # fmt: skip
        with pytest.raises(ValueError, match=words):
            load_spec(spec)
    assert isinstance(load_spec("ntkit:Linear"), type)
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="must define a variable named `arch`"):
        load_spec(str(tmp_path / "empty.py"))
    np.save(tmp_path / "y.npy", np.zeros(3))
    assert nk_main(["solve", str(tmp_path / "missing.zarr"), "--y", str(tmp_path / "y.npy"), "--out", "a.npy"]) == 2
    assert "no ntkit kernel store" in capsys.readouterr().err
    assert nk.Linear is load_spec("ntkit:Linear")
