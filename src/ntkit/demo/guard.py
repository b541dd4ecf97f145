"""The demo server's door: who may talk to it, how much they may send, and how often.

:class:`Guard` is a plain ASGI middleware in front of the demo app. Every HTTP request passes these checks, in
this order, before the app sees it:

1. **Host** (against DNS rebinding): the ``Host`` header must name the address the server was started on, with
   its port. ``localhost`` and the loopback addresses count as the same machine; a server bound to every
   interface (``0.0.0.0`` or ``::``) accepts any IP literal, but never a domain name that is not trusted, since a
   rebinding attack needs one. Refused with 421.
2. **Origin** (against cross-site requests): a request that carries ``Origin`` (every browser ``fetch`` that
   posts does) must come from the page's own origin, ``http://<its Host>``, or from an origin added with
   ``trusted_origins``; an API call that the browser marks ``Sec-Fetch-Site: cross-site`` needs one. Refused
   with 403. A plain link from another site may still open the page.
3. **Token**, when the server has one: every ``/api/`` request must carry it in the ``X-Ntkit-Token`` header
   (compared in constant time). The page and its static files need none, so the first paint stays static. 401.
4. **Rate** per client address (token buckets): run starts, and all API calls. Refused with 429 and
   ``Retry-After``.
5. **Body** of a POST: only ``application/json`` (so that a page elsewhere cannot post without a CORS preflight,
   which this server never grants; 415), at most ``max_body`` bytes (413, checked from ``Content-Length`` before
   reading, and while reading), read within ``read_timeout`` seconds in all (408), and nested at most
   ``max_json_depth`` deep (400). A client that leaves before its body arrives costs one quiet log line.

Refusals are JSON ``{"errors": [{"param", "message"}]}``, like the app's own, so the page shows them.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("ntkit.demo")

#: The header that carries the token.
TOKEN_HEADER = "x-ntkit-token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) can only be reached from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def split_host(value: str) -> tuple[str, int | None]:
    """``"name:port"`` or ``"[v6]:port"`` → (name, port); the port is None when absent or not a number."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    return name, int(port) if port.isdigit() else None


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text, found by one linear scan (no recursion), so that a
    body nested 100,000 deep is measured, not parsed."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


class RateLimiter:
    """Token buckets per key: ``burst`` requests at once, refilled at ``per_second``; thread-safe.

    ``take(key)`` spends one token and returns 0, or returns the seconds until one is available (nothing spent).
    """

    def __init__(self, burst: float, per_second: float, clock: Callable[[], float] = time.monotonic):
        if not burst >= 1 or not per_second > 0:
            raise ValueError(f"burst must be ≥ 1 and per_second > 0; got {burst} and {per_second}")
        self.burst, self.per_second, self.clock = float(burst), float(per_second), clock
        self.buckets: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def take(self, key: str) -> float:
        now = self.clock()
        with self.lock:
            tokens, then = self.buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.per_second)
            if tokens < 1:
                self.buckets[key] = (tokens, now)
                return (1 - tokens) / self.per_second
            self.buckets[key] = (tokens - 1, now)
            if len(self.buckets) > 10_000:  # forget full buckets: they behave as new ones
                self.buckets = {k: v for k, v in self.buckets.items() if v[0] < self.burst - 1}
            return 0.0


@dataclass
class GuardConfig:
    """What :class:`Guard` enforces (see the module docstring). ``host`` and ``port`` are the bound address."""

    host: str = "127.0.0.1"
    port: int = 8765
    trusted_origins: Iterable[str] = ()
    token: str | None = None
    max_body: int = 16 * 1024
    read_timeout: float = 10.0
    max_json_depth: int = 8
    runs_per_minute: float = 20.0
    run_burst: int = 6
    api_per_second: float = 10.0
    api_burst: int = 60
    trusted: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        origins = []
        for origin in self.trusted_origins:
            parts = urlsplit(origin.strip().rstrip("/"))
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
                raise ValueError(f"trusted_origins must be origins like http://host:port; got {origin!r}")
            origins.append(f"{parts.scheme}://{parts.netloc.lower()}")
        self.trusted = frozenset(origins)
        if self.token is not None and (not isinstance(self.token, str) or len(self.token) < 8):
            raise ValueError(f"token must be a string of at least 8 characters; got {self.token!r}")
        if self.max_body < 1 or not self.read_timeout > 0 or self.max_json_depth < 1:
            raise ValueError("max_body, read_timeout and max_json_depth must be positive")

    def host_allowed(self, value: str) -> bool:
        """Whether a ``Host`` header names this server: its port, and its address, a loopback name for a loopback
        server, any IP literal for a wildcard bind, or the host of a trusted origin."""
        name, port = split_host(value)
        if port != self.port:
            return False
        if any(split_host(urlsplit(o).netloc) == (name, port) for o in self.trusted):
            return True
        bound = self.host.lower().strip("[]")
        if name == bound:
            return True
        if bound in WILDCARDS:
            return _ip_literal(name) or name == "localhost"
        return is_loopback(bound) and name in LOOPBACK_NAMES

    def origin_allowed(self, origin: str, host: str) -> bool:
        """The page's own origin (``http://`` + an allowed Host) or a trusted one."""
        origin = origin.strip().lower().rstrip("/")
        return origin in self.trusted or (origin == f"http://{host.strip().lower()}" and self.host_allowed(host))


def _refusal(status: int, param: str, message: str, headers: dict[str, str] | None = None) -> list[Message]:
    body = json.dumps({"errors": [{"param": param, "message": message}]}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")]  # fmt: skip
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    return [{"type": "http.response.start", "status": status, "headers": raw},
            {"type": "http.response.body", "body": body}]  # fmt: skip


class Guard:
    """ASGI middleware that enforces a :class:`GuardConfig` on every HTTP request (see the module docstring).

    Parameters
    ----------
    app:
        The ASGI app behind the door.
    config:
        The limits. ``config.host`` and ``config.port`` must be the address the server is bound to.

    Example
    -------
    >>> from starlette.applications import Starlette
    >>> guarded = Guard(Starlette(), GuardConfig(host="127.0.0.1", port=8765))
    """

    def __init__(self, app: ASGIApp, config: GuardConfig):
        self.app, self.config = app, config
        self.state = getattr(app, "state", None)  # the wrapped app's state (the demo's run registry)
        self.runs = RateLimiter(config.run_burst, config.runs_per_minute / 60)
        self.api = RateLimiter(config.api_burst, config.api_per_second)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._check_headers(scope)
        if refusal is not None:
            await self._send(send, refusal)
            return
        if scope["method"] == "POST":
            result = await self._read_body(scope, receive)
            if result is None:  # the client left
                return
            if isinstance(result, list):
                await self._send(send, result)
                return
            receive = _replay(result, receive)
        await self.app(scope, receive, self._with_headers(send))

    @staticmethod
    async def _send(send: Send, messages: list[Message]) -> None:
        for message in messages:
            await send(message)

    @staticmethod
    def _with_headers(send: Send) -> Send:
        """Adds headers that keep the page out of frames and its URL (with any token) out of Referer."""
        extra = [(b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer"),
                 (b"x-content-type-options", b"nosniff")]  # fmt: skip

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        return wrapped

    def _check_headers(self, scope: Scope) -> list[Message] | None:
        config = self.config
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if not config.host_allowed(host):
            return _refusal(421, "host", f"this server answers only to its own address (port {config.port}); "
                            f"got Host {host[:80]!r}")  # fmt: skip
        origin = headers.get("origin")
        if origin is not None and not config.origin_allowed(origin, host):
            return _refusal(403, "origin", f"requests from other sites are refused; got Origin {origin[:80]!r} "
                            "(start the demo with --trusted-origin to allow one)")  # fmt: skip
        path = scope.get("path", "")
        if not path.startswith("/api/"):  # the page and its files: a link from another site may open them
            return None
        if headers.get("sec-fetch-site") == "cross-site" and origin is None:
            return _refusal(403, "origin", "requests from other sites are refused")
        if config.token is not None and not hmac.compare_digest(
            headers.get(TOKEN_HEADER, "").encode(), config.token.encode()
        ):
            return _refusal(401, "token", "this server needs its token: open the address it printed when it "
                            "started, which ends in ?token=…")  # fmt: skip
        address = (scope.get("client") or ("unknown", 0))[0]
        wait = self.api.take(address)
        if not wait and path == "/api/run" and scope["method"] == "POST":
            wait = self.runs.take(address)
        if wait:
            seconds = max(1, math.ceil(wait))
            return _refusal(429, "rate", f"too many requests from {address}; try again in {seconds} s",
                            {"retry-after": str(seconds)})  # fmt: skip
        if scope["method"] == "POST":
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                return _refusal(415, "body", f"the request body must be JSON (Content-Type: application/json); "
                                f"got {kind[:60]!r}")  # fmt: skip
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > config.max_body):
                return _refusal(413, "body", f"the request body may be at most {config.max_body:,} bytes; "
                                f"got Content-Length {length[:20]}")  # fmt: skip
        return None

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | list[Message] | None:
        """The whole body, a refusal, or None when the client went away."""
        config, chunks, size = self.config, [], 0
        address = (scope.get("client") or ("unknown", 0))[0]
        deadline = time.monotonic() + config.read_timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                logger.info("demo: client %s sent its body too slowly (> %g s); answered 408", address,
                            config.read_timeout)  # fmt: skip
                return _refusal(408, "body", f"the request body did not arrive within {config.read_timeout:g} s")
            if message["type"] == "http.disconnect":
                logger.info("demo: client %s left before its request body arrived", address)
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > config.max_body:
                return _refusal(413, "body", f"the request body may be at most {config.max_body:,} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if json_depth(body) > config.max_json_depth:
            return _refusal(400, "body", f"the request body is nested more than {config.max_json_depth} deep")
        return body


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then passes on to the client's (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
