"""Kill and resume (issue 12): the `ntkit kernel` driver is killed with SIGKILL (with its LocalCluster) at several
points and one of its worker processes is killed mid-run; reruns of the same command finish the store. Every
committed tile appends "I J" to the tile log (NTKIT_SCALE_TILE_LOG), so "each tile is computed exactly once over
all runs" is checked directly, and the result must equal the in-memory kernel cut into the same blocks bit for
bit (each tile is one deterministic single-threaded computation)."""

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from ntkit.scale import TiledKernel

from .conftest import ntkit_cli, subprocess_env

SPEC = str(Path(__file__).with_name("slow_spec.py"))
N, TILE = 32, 4  # 8 row tiles: 36 tiles I ≤ J of 0.1 s each


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _wait(proc: subprocess.Popen, until, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert proc.poll() is None, f"the driver ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting for the kill point"
        time.sleep(0.02)


def _workers(pid: int) -> list[int]:
    """Worker processes started by the driver's LocalCluster (its multiprocessing spawn children)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"spawn_main" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_sigkill_driver_and_worker_then_resume(tmp_path):
    x = torch.randn(N, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    np.save(tmp_path / "x.npy", x.numpy())
    log = tmp_path / "tiles.log"
    out = tmp_path / "K.zarr"
    command = ntkit_cli("kernel", SPEC, "--x", str(tmp_path / "x.npy"), "--out", str(out), "--tile", str(TILE),
                        "--dtype", "float64", "--workers", "1")  # fmt: skip
    env = subprocess_env(NTKIT_SCALE_TILE_LOG=str(log))

    def start() -> subprocess.Popen:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # fmt: skip

    def kill_all(proc: subprocess.Popen) -> None:  # the driver and its LocalCluster, as a machine crash would
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()

    # 1: killed as soon as the store exists, before or while the first tiles run
    proc = start()
    _wait(proc, lambda: (out / "zarr.json").exists())
    kill_all(proc)
    # 2: killed after 5 tiles
    proc = start()
    _wait(proc, lambda: len(_lines(log)) >= 5)
    kill_all(proc)
    # 3: the worker killed mid-run (its nanny restarts it and the lost task reruns), then the driver at 20 tiles
    proc = start()
    _wait(proc, lambda: len(_lines(log)) >= 10)
    victims = _workers(proc.pid)
    assert victims, "no worker process found"
    os.kill(victims[0], signal.SIGKILL)
    _wait(proc, lambda: len(_lines(log)) >= 20)
    kill_all(proc)
    assert 20 <= len(_lines(log)) < 36
    # 4: the rerun finishes
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "36/36 tiles" in done.stdout
    tiles = _lines(log)
    assert len(tiles) == len(set(tiles)) == 36  # every tile I ≤ J computed exactly once over the four runs
    import runpy

    reference = runpy.run_path(SPEC)["same_without_pause"].kernel(x, batch_size=TILE)
    k = TiledKernel(out)
    for kind in ("nngp", "ntk"):
        assert torch.equal(torch.from_numpy(getattr(k, kind).compute(scheduler="sync")), getattr(reference, kind))
