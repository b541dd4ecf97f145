"""The demo server against hostile and unlucky clients, live on a free loopback port (issue 17).

Every loop here is bounded (a fixed count of requests, sockets with timeouts, deadlines in seconds), so nothing
can hang the suite.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import httpx
import pytest

from ntkit.demo.app import RunHandle
from ntkit.demo.guard import GuardConfig, RateLimiter, json_depth, split_host

from .conftest import LiveServer

SMALL = {"width": 32, "steps": 10, "learning_rate": 0.3, "task": "sin"}
LONG = {"width": 1024, "steps": 5000, "learning_rate": 0.3, "task": "sin"}


class Records(logging.Handler):
    """Collects the log records of the demo and of uvicorn (whose loggers do not reach pytest's caplog)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records():
    handler = Records()
    loggers = [logging.getLogger(n) for n in ("ntkit.demo", "uvicorn.error", "uvicorn", "starlette")]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    yield handler.records
    for lg, level in saved:
        lg.removeHandler(handler)
        lg.setLevel(level)


@pytest.fixture(scope="module")
def guarded():
    """A server with small limits: 2 KiB bodies read within 0.5 s, one run per address, runs capped at 1.5 s."""
    limits = {"max_body": 2048, "read_timeout": 0.5, "max_json_depth": 8, "run_burst": 10_000, "api_burst": 10_000}
    with LiveServer(work_cap=2e7, n_frames=10, max_runs=2, runs_per_address=1, max_wall_s=1.5, **limits) as s:
        yield s


def _raw(server, request: bytes, wait: float = 5.0) -> bytes:
    """Send raw bytes and read what comes back until the server closes or ``wait`` seconds pass."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0


# --- the pure pieces -------------------------------------------------------------------------------------------


def test_json_depth_scans_without_recursion():
    assert json_depth(b'{"a": 1}') == 1 and json_depth(b"3") == 0
    assert json_depth(b'{"a": [1, {"b": [2]}]}') == 4
    assert json_depth(b'{"a": "[[[[{{{{"}') == 1  # brackets inside strings do not count
    assert json_depth(b'{"a": "\\"[[["}') == 1  # nor after an escaped quote
    assert json_depth(b"[" * 100_000 + b"]" * 100_000) == 100_000


@pytest.mark.parametrize(
    ("bound", "host", "ok"),
    [("127.0.0.1", "127.0.0.1:8765", True), ("127.0.0.1", "localhost:8765", True), ("127.0.0.1", "[::1]:8765", True),
     ("127.0.0.1", "127.0.0.1:9999", False), ("127.0.0.1", "evil.example:8765", False), ("127.0.0.1", "", False),
     ("127.0.0.1", "127.0.0.1", False), ("0.0.0.0", "192.168.1.20:8765", True), ("0.0.0.0", "[fe80::1]:8765", True),
     ("0.0.0.0", "rebind.evil.example:8765", False), ("192.168.1.20", "192.168.1.20:8765", True),
     ("192.168.1.20", "localhost:8765", False), ("192.168.1.20", "10.0.0.1:8765", False)],
)  # fmt: skip
def test_the_host_header_must_name_the_bound_address(bound, host, ok):
    assert GuardConfig(host=bound, port=8765).host_allowed(host) is ok


def test_trusted_origins_and_their_checks():
    config = GuardConfig(port=8765, trusted_origins=("https://ntk.example.org", "http://proxy.lan:8765/"))
    assert config.origin_allowed("https://ntk.example.org", "127.0.0.1:8765")
    assert config.host_allowed("proxy.lan:8765")
    assert config.origin_allowed("http://127.0.0.1:8765", "127.0.0.1:8765")
    assert not config.origin_allowed("http://localhost:8765", "127.0.0.1:8765")  # another origin than the page's
    assert not config.origin_allowed("https://evil.example", "127.0.0.1:8765")
    for bad in ("ntk.example.org", "ftp://x:1", "http://x:1/path"):
        with pytest.raises(ValueError, match="trusted_origins must be origins"):
            GuardConfig(trusted_origins=(bad,))
    with pytest.raises(ValueError, match="token must be a string of at least 8"):
        GuardConfig(token="short")
    assert split_host("[::1]:80") == ("::1", 80) and split_host("a.b") == ("a.b", None)


def test_rate_limiter_buckets_refill_at_their_rate():
    now = [0.0]
    limiter = RateLimiter(burst=3, per_second=0.5, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(2.0)  # one token per 2 s
    assert limiter.take("b") == 0.0  # buckets are per address
    now[0] = 2.0
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0


# --- against the live server -----------------------------------------------------------------------------------


def test_hostile_headers_are_refused(guarded):
    url = f"{guarded.url}/api/run"
    body = {**SMALL, "client": "h"}
    cross = httpx.post(url, content=b'{"client": "h"}', headers={"content-type": "text/plain"})
    assert cross.status_code == 415 and cross.json()["errors"][0]["param"] == "body"
    evil = httpx.post(url, json=body, headers={"origin": "https://evil.example"})
    assert evil.status_code == 403 and "evil.example" in evil.json()["errors"][0]["message"]
    rebound = httpx.post(url, json=body, headers={"host": f"evil.example:{guarded.port}"})
    assert rebound.status_code == 421
    assert httpx.get(guarded.url + "/", headers={"host": "evil.example"}).status_code == 421
    link = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"}  # a link from another site to the page
    assert httpx.get(guarded.url + "/", headers=link).status_code == 200
    assert httpx.get(guarded.url + "/api/params", headers=link).status_code == 403
    fetch = httpx.post(url, json={**body, "steps": 0}, headers={"origin": guarded.url})  # the page's own origin
    assert fetch.status_code == 422 and fetch.json()["errors"][0]["param"] == "steps"
    page = httpx.get(guarded.url + "/")
    assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "no-referrer"


def test_oversized_deep_and_slow_bodies(guarded, records):
    url = f"{guarded.url}/api/run"
    big = httpx.post(url, content=b" " * 4096, headers={"content-type": "application/json"})
    assert big.status_code == 413 and "2,048 bytes" in big.json()["errors"][0]["message"]
    # A declared 500 MB body is refused from its header, before a byte of it is read.
    start = time.monotonic()
    raw = _raw(guarded, f"POST /api/run HTTP/1.1\r\nHost: 127.0.0.1:{guarded.port}\r\nContent-Type: "
               "application/json\r\nContent-Length: 500000000\r\n\r\n{".encode())  # fmt: skip
    assert _status(raw) == 413 and time.monotonic() - start < 3
    # A chunked body without a length is cut off at the cap.
    chunks = (b"[" * 1000 for _ in range(10))
    assert httpx.post(url, content=chunks, headers={"content-type": "application/json"}).status_code == 413
    deep = httpx.post(url, content=b"[" * 1000 + b"]" * 1000, headers={"content-type": "application/json"})
    assert deep.status_code == 400 and "nested more than 8" in deep.json()["errors"][0]["message"]
    # A body that stops half-way is answered 408 after the read timeout (0.5 s), not held open.
    start = time.monotonic()
    raw = _raw(guarded, f"POST /api/run HTTP/1.1\r\nHost: 127.0.0.1:{guarded.port}\r\nContent-Type: "
               "application/json\r\nContent-Length: 100\r\n\r\n{\"client\"".encode())  # fmt: skip
    assert _status(raw) == 408 and time.monotonic() - start < 4
    assert not [r for r in records if r.exc_info or "Traceback" in r.getMessage()]


def test_clients_that_leave_half_way_cost_one_quiet_line_each(guarded, records):
    n = 20
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", guarded.port), timeout=5) as sock:
            sock.sendall(f"POST /api/run HTTP/1.1\r\nHost: 127.0.0.1:{guarded.port}\r\nContent-Type: "
                         "application/json\r\nContent-Length: 100\r\n\r\n{\"cl".encode())  # fmt: skip
    deadline = time.monotonic() + 5
    left = []
    while time.monotonic() < deadline and len(left) < n:
        left = [r for r in records if "left before its request body" in r.getMessage()]
        time.sleep(0.05)
    assert len(left) == n
    assert all(r.levelno <= logging.INFO and r.exc_info is None for r in records), [r.getMessage() for r in records]


def test_a_client_leaving_during_its_run_is_one_line(guarded, records):
    with httpx.Client(base_url=guarded.url, timeout=30) as http:
        with http.stream("POST", "/api/run", json={**LONG, "client": "leaves"}) as response:
            next(response.iter_lines())
    assert guarded.wait_ended("leaves") == "disconnected"
    lines = [r for r in records if "leaves" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert not [r for r in records if r.exc_info]


def test_one_address_cannot_hold_every_run_slot(guarded):
    with httpx.Client(base_url=guarded.url, timeout=30) as http:
        with http.stream("POST", "/api/run", json={**LONG, "client": "first"}) as response:
            lines = response.iter_lines()  # held: a dropped iterator closes the connection
            next(lines)
            second = httpx.post(f"{guarded.url}/api/run", json={**SMALL, "client": "second"})
            assert second.status_code == 429 and "already trains 1 run" in second.json()["errors"][0]["message"]
            httpx.post(f"{guarded.url}/api/stop", json={"client": "first"})
    assert guarded.wait_ended("first") == "stopped"


def test_every_run_stops_at_the_wall_clock_cap(guarded):
    start = time.monotonic()
    with httpx.Client(base_url=guarded.url, timeout=30) as http:
        with http.stream("POST", "/api/run", json={**LONG, "client": "slow"}) as response:
            last = [line for line in response.iter_lines() if line.startswith("data:")][-1]
    assert '"type":"stopped"' in last and '"reason":"time limit"' in last
    assert time.monotonic() - start < 10  # cap 1.5 s, checked every 0.5 s, plus one step and one frame


def test_replacing_a_run_never_blocks_other_clients():
    with LiveServer(n_frames=4, runs_per_address=2) as server:
        _replace_while_another_client_starts(server)


def _replace_while_another_client_starts(guarded) -> None:
    # A run whose worker is slow to notice its cancellation: its `finished` is set only when the test says so.
    stuck = RunHandle("stuck", address="10.9.9.9")
    guarded.registry.active["stuck"] = stuck
    replaced: list[int] = []
    thread = threading.Thread(target=lambda: replaced.append(
        httpx.post(f"{guarded.url}/api/run", json={**SMALL, "client": "stuck"}, timeout=30).status_code))  # fmt: skip
    try:
        thread.start()
        deadline = time.monotonic() + 5
        while not stuck.cancel.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stuck.cancel.is_set() and stuck.reason == "replaced"
        start = time.monotonic()
        with httpx.Client(base_url=guarded.url, timeout=30) as http:
            with http.stream("POST", "/api/run", json={**SMALL, "client": "other"}) as response:
                assert response.status_code == 200
                first = time.monotonic() - start
                list(response.iter_lines())
        # The old code held the server's lock while waiting up to 10 s for the stuck run; 5 s leaves room for a
        # busy machine to build the other client's small run.
        assert first < 5.0, f"another client waited {first:.1f} s while a run was being replaced"
        assert thread.is_alive(), "the replacing client itself waits for its old run"
    finally:
        stuck.finished.set()
        thread.join(30)
    assert replaced == [200]
    assert guarded.wait_ended("stuck") == "done"


def test_the_rate_limit_answers_429_with_retry_after():
    with LiveServer(run_burst=3, runs_per_minute=0.6, api_burst=10_000) as server:  # refills one per 100 s
        url = f"{server.url}/api/run"
        answers = [httpx.post(url, json={**SMALL, "steps": 0, "client": "r"}) for _ in range(5)]
        assert [a.status_code for a in answers] == [422, 422, 422, 429, 429]
        assert 99 <= int(answers[3].headers["retry-after"]) <= 100 and "try again in" in answers[3].text
        assert httpx.post(f"{server.url}/api/limits", json=SMALL).status_code == 200  # other calls still pass
    with LiveServer(api_burst=4, api_per_second=0.01) as server:
        codes = [httpx.get(f"{server.url}/api/params").status_code for _ in range(6)]
        assert codes == [200] * 4 + [429] * 2


def test_a_token_guards_the_api_but_not_the_page():
    token = "correct-horse-battery"
    with LiveServer(token=token) as server:
        assert httpx.get(server.url + "/").status_code == 200
        assert httpx.get(server.url + "/static/demo.js").status_code == 200
        refused = httpx.get(server.url + "/api/params")
        assert refused.status_code == 401 and "?token=" in refused.json()["errors"][0]["message"]
        assert httpx.get(server.url + "/api/params", headers={"x-ntkit-token": token[:-1]}).status_code == 401
        assert httpx.get(server.url + "/api/params", headers={"x-ntkit-token": token}).status_code == 200
        run = httpx.post(server.url + "/api/run", json={**SMALL, "client": "t"}, headers={"x-ntkit-token": token})
        assert run.status_code == 200 and '"type":"done"' in run.text


def _second_loopback_address() -> bool:
    """Whether this machine can connect from 127.0.0.2 (Linux routes all of 127/8 to loopback; macOS does not)."""
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.2", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _second_loopback_address(), reason="127.0.0.2 is not a loopback address on this machine")
def test_a_flood_from_two_ids_on_one_address_leaves_room_for_others():
    with LiveServer(n_frames=4, max_runs=2, runs_per_address=1, run_burst=4, runs_per_minute=6) as server:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            with http.stream("POST", "/api/run", json={**LONG, "client": "flood-a"}) as held:
                lines = held.iter_lines()  # held: a dropped iterator closes the connection
                next(lines)
                url = f"{server.url}/api/run"
                codes = [
                    httpx.post(url, json={**SMALL, "client": f"flood-{'bc'[i % 2]}"}).status_code for i in range(10)
                ]
                # Two more ids from the same address: its one slot is taken, then its bucket is empty.
                assert set(codes) == {429}, codes
                # Another address (127.0.0.2 is loopback too) still gets the second slot.
                other = httpx.Client(base_url=server.url, timeout=30,
                                     transport=httpx.HTTPTransport(local_address="127.0.0.2"))  # fmt: skip
                with other:
                    with other.stream("POST", "/api/run", json={**SMALL, "client": "elsewhere"}) as response:
                        assert response.status_code == 200
                        assert '"type":"done"' in [line for line in response.iter_lines() if line][-1]
                httpx.post(f"{server.url}/api/stop", json={"client": "flood-a"})
        assert server.wait_ended("flood-a") == "stopped"
        assert server.registry.ended["elsewhere"] == "done"
