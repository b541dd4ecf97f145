"""A live demo server on a free port (uvicorn in a thread), shared by the API and browser tests."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

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


# --- the browser (Debian's chromium driven by Playwright), shared by test_browser.py and test_lesson.py ---

#: Screenshots of the browser tests; axe-core as `make axe` installs it (served to the page only by the tests).
AXE = Path(__file__).resolve().parents[2] / ".cache" / "npm" / "node_modules" / "axe-core" / "axe.min.js"
#: Screenshots of the browser tests.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "demo"
REQUIRED = os.environ.get("CI", "").lower() not in ("", "0", "false") or os.environ.get("NTKIT_REQUIRE_BROWSER") == "1"
HOW = ("install Debian's chromium (`apt-get install chromium`, which `make test` does when run as root) and the "
       "dev extras (`pip install -e '.[dev]'`)")  # fmt: skip


def _chromium() -> str | None:
    """``NTKIT_CHROMIUM`` if set (a path), else Debian's ``chromium`` on PATH or at /usr/bin/chromium."""
    chosen = os.environ.get("NTKIT_CHROMIUM")
    if chosen is not None:
        return chosen if Path(chosen).is_file() else None
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return found or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def _unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"browser tests are required here (CI) but {reason}; {HOW}")
    pytest.skip(f"{reason}; to run the browser tests, {HOW}")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright's Python client is not installed")
    executable = _chromium()
    if executable is None:
        _unavailable("no chromium executable was found")
    with sync_playwright() as p:
        # Never `playwright install`: the browser is the system's. --no-sandbox because CI runs as root.
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()
