"""Shared pieces of the scale tests: a small in-process dask client, and subprocesses that see this checkout."""

import os
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a driver, scheduler or worker subprocess: this checkout's ntkit first, one thread."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


def ntkit_cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from ntkit.cli import main; sys.exit(main())", *args]


@pytest.fixture(scope="session")
def client():
    """One in-process worker with two threads: real dask tasks without the start-up cost of worker processes."""
    distributed = pytest.importorskip("distributed")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as c:
        yield c
