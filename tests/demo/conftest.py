"""A live demo server on a free port (uvicorn in a thread), shared by the API and browser tests."""

from __future__ import annotations

import socket
import threading
import time

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, **app_kwargs):
        import uvicorn

        from ntkit.demo import create_app

        self.port = _free_port()
        self.app = create_app(host="127.0.0.1", port=self.port, **app_kwargs)
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the demo server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def registry(self):
        return self.app.state.registry

    def wait_ended(self, client: str, timeout: float = 20.0) -> str:
        """The reason ``client``'s last run ended, once it has."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if client not in self.registry.active and client in self.registry.ended:
                return self.registry.ended[client]
            time.sleep(0.05)
        raise AssertionError(f"the run of {client!r} did not end within {timeout} s")


@pytest.fixture(scope="module")
def live_server():
    """A demo server with a small work cap (2·10⁷ parameter-steps), 10 frames per run, and two runs per address
    (every test client is 127.0.0.1), and rate limits no test reaches (test_guard.py tests them)."""
    limits = {"runs_per_address": 2, "run_burst": 10_000, "api_burst": 10_000}
    with LiveServer(work_cap=2e7, n_frames=10, max_runs=2, **limits) as server:
        yield server
