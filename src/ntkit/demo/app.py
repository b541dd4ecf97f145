"""The demo's ASGI app: the page, its local scripts, and training runs streamed as Server-Sent Events.

Routes
------
``GET /``                  the page (``static/index.html``)
``GET /static/…``          its stylesheet and script
``GET /vendor/plotly.min.js``  Plotly, from the installed ``plotly`` package: nothing is loaded from the internet
``GET /api/params``        the parameter ranges (:data:`ntkit.demo.params.SPEC`), the work cap and the thresholds
``POST /api/run``          a JSON object of parameters and a ``client`` id; answers 422 with
                           ``{"errors": [{"param", "message"}]}`` for bad ones, else streams ``text/event-stream``
                           messages ``data: {json}`` of types init, frame, done, stopped and error
``POST /api/stop``         ``{"client": id}``: stops that client's run
``POST /api/learning-curve``  the learning-curve panel (:mod:`ntkit.demo.learning_curve`)
``POST /api/limits``       the same parameters as a run: 200 with the largest stable learning rate, the parameter
                           count and the work (:func:`ntkit.demo.params.work`) against the cap, or 422 for bad ones
``GET /api/seed-example``  the page's code section: the classic two-layer ReLU example run by ntkit
                           (:mod:`ntkit.demo.seed_example`), its source and its test errors, computed once

Each client has at most one run: a new run from the same client stops the old one first, without making other
clients wait. A run stops when its client disconnects or asks to stop, or after ``max_wall_s`` seconds; it trains
in a worker thread that checks a cancellation flag every step. One client address holds at most
``runs_per_address`` of the ``max_runs`` slots. Everything in front of the routes (the Host and Origin checks,
the token, rate limits, and the limits on request bodies) is :class:`ntkit.demo.guard.Guard`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ntkit.demo.experiment import (
    DEFAULT_FRAMES,
    KERNEL_THRESHOLD,
    TRACK_THRESHOLD,
    Experiment,
    stable_learning_rate,
)
from ntkit.demo.guard import Guard, GuardConfig, is_loopback
from ntkit.demo.learning_curve import learning_curve_route
from ntkit.demo.params import DEFAULT_WORK_CAP, SPEC, TASK_SHAPES, ParamError, n_parameters, parse_params, work

STATIC = Path(__file__).resolve().parent / "static"
CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Runs the server trains at once, over all clients.
DEFAULT_MAX_RUNS = 2
#: Runs one client address may train at once.
DEFAULT_RUNS_PER_ADDRESS = 1
#: Seconds one run may train before the server stops it (the largest run the work cap admits takes about 15 s on
#: one idle core).
DEFAULT_MAX_WALL_S = 120.0
logger = logging.getLogger("ntkit.demo")


def plotly_js() -> Path:
    """The path of ``plotly.min.js`` inside the installed ``plotly`` package."""
    path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found at {path}; reinstall plotly (pip install 'ntkit[demo]')")
    return path


@dataclass
class RunHandle:
    """One client's run: its cancellation flag, the reason it stopped, and an event set when its thread ends."""

    client: str
    address: str = "unknown"
    started: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    reason: str | None = None  # "done", "stopped", "disconnected", "replaced", "error"


class Registry:
    """The runs in flight, one per client, and the reasons the last runs ended (for tests and the status)."""

    def __init__(self, max_runs: int):
        self.max_runs = max_runs
        self.active: dict[str, RunHandle] = {}
        self.ended: dict[str, str] = {}
        self.lock = asyncio.Lock()

    def stop(self, client: str, reason: str) -> RunHandle | None:
        handle = self.active.get(client)
        if handle is not None and not handle.cancel.is_set():
            handle.reason = handle.reason or reason
            handle.cancel.set()
        return handle


def _sse(message: dict[str, Any]) -> str:
    return f"data: {json.dumps(message, separators=(',', ':'))}\n\n"


def _error(status: int, errors: list[dict[str, str]]) -> JSONResponse:
    return JSONResponse({"errors": errors}, status_code=status)


def create_app(work_cap: float = DEFAULT_WORK_CAP, n_frames: int = DEFAULT_FRAMES, max_runs: int = DEFAULT_MAX_RUNS,
               *, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
               trusted_origins: tuple[str, ...] = (), runs_per_address: int = DEFAULT_RUNS_PER_ADDRESS,
               max_wall_s: float = DEFAULT_MAX_WALL_S, **limits: Any) -> Guard:  # fmt: skip
    """The demo app behind its :class:`~ntkit.demo.guard.Guard`.

    Parameters
    ----------
    work_cap:
        The most work one run may start (:func:`ntkit.demo.params.work`, kernel frames included).
    n_frames:
        Frames streamed per run after t = 0.
    max_runs:
        Runs trained at once over all clients; more are answered 503.
    host, port:
        The address the server is bound to: the Host and Origin checks accept only it.
    token:
        If given, every API request must carry it (header ``X-Ntkit-Token``); the page takes it from ``?token=``.
    trusted_origins:
        Further origins (``http://name:port``) whose pages may call the API.
    runs_per_address:
        Runs one client address may train at once; more are answered 429.
    max_wall_s:
        Seconds a run may train before it is stopped (reason ``"time limit"``).
    **limits:
        Further :class:`~ntkit.demo.guard.GuardConfig` fields: ``max_body``, ``read_timeout``, ``max_json_depth``,
        ``runs_per_minute``, ``run_burst``, ``api_per_second``, ``api_burst``.

    Raises
    ------
    ValueError
        For a limit out of range, a malformed trusted origin or a token shorter than 8 characters.
    """
    if not max_wall_s > 0 or runs_per_address < 1 or max_runs < 1:
        raise ValueError(f"max_wall_s, runs_per_address and max_runs must be positive; got {max_wall_s}, "
                         f"{runs_per_address} and {max_runs}")  # fmt: skip
    config = GuardConfig(host=host, port=port, token=token, trusted_origins=trusted_origins, **limits)
    registry = Registry(max_runs)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    async def vendor_plotly(request: Request) -> Response:
        return FileResponse(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    async def params(request: Request) -> Response:
        return JSONResponse({"spec": SPEC, "work_cap": work_cap, "task_shapes": TASK_SHAPES,
                             "thresholds": {"track": TRACK_THRESHOLD, "kernel": KERNEL_THRESHOLD}})  # fmt: skip

    async def _body(request: Request) -> dict[str, Any] | JSONResponse:
        try:
            body = json.loads(await request.body() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, [{"param": "body", "message": f"the request body must be JSON; {exc}"}])
        if not isinstance(body, dict):
            return _error(
                422, [{"param": "body", "message": f"the request body must be a JSON object; got {body!r:.80}"}]
            )
        client = body.get("client")
        if not isinstance(client, str) or not CLIENT_ID.fullmatch(client):
            return _error(422, [{"param": "client", "message": "client must be an id of 1 to 64 letters, digits, "
                                 f"'-' or '_'; got {client!r:.80}"}])  # fmt: skip
        return body

    async def seed_example(request: Request) -> Response:
        from ntkit.demo.seed_example import seed_example_report

        return JSONResponse(await anyio.to_thread.run_sync(seed_example_report))

    async def stop(request: Request) -> Response:
        body = await _body(request)
        if isinstance(body, Response):
            return body
        handle = registry.stop(body["client"], "stopped")
        return JSONResponse({"stopped": handle is not None})

    async def limits(request: Request) -> Response:
        try:
            raw = json.loads(await request.body() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, [{"param": "body", "message": f"the request body must be JSON; {exc}"}])
        if isinstance(raw, dict):
            raw = {k: v for k, v in raw.items() if k != "client"}
        try:
            checked = parse_params(raw, work_cap=float("inf"), n_frames=n_frames)
        except ParamError as exc:
            return _error(422, exc.errors)
        lr_max = await anyio.to_thread.run_sync(stable_learning_rate, checked)
        d, o = TASK_SHAPES[checked.task]
        return JSONResponse({"max_learning_rate": lr_max, "work": work(checked, n_frames), "work_cap": work_cap,
                             "n_parameters": n_parameters(checked.width, checked.depth, d, o)})  # fmt: skip

    async def run(request: Request) -> Response:
        body = await _body(request)
        if isinstance(body, Response):
            return body
        client = body["client"]
        try:
            run_params = parse_params({k: v for k, v in body.items() if k != "client"}, work_cap=work_cap,
                                      n_frames=n_frames)  # fmt: skip
        except ParamError as exc:
            return _error(422, exc.errors)
        address = (request.client.host if request.client else "unknown") or "unknown"
        async with registry.lock:  # never awaits: other clients never wait on a replaced run
            others = [h for c, h in registry.active.items() if c != client]
            if len(others) >= registry.max_runs:
                return _error(503, [{"param": "server", "message": f"the server is busy with {registry.max_runs} "
                                     "runs from other pages; try again in a moment"}])  # fmt: skip
            if sum(h.address == address for h in others) >= runs_per_address:
                return _error(429, [{"param": "server", "message": f"{address} already trains {runs_per_address} "
                                     "run(s) from another page; stop it or wait for it to finish"}])  # fmt: skip
            old = registry.stop(client, "replaced")
            handle = registry.active[client] = RunHandle(client, address)
        if old is not None:  # only this client waits for its old run to let go of the CPU
            await anyio.to_thread.run_sync(old.finished.wait, 10.0)
        try:
            experiment = await anyio.to_thread.run_sync(lambda: Experiment(run_params, n_frames=n_frames))
        except ParamError as exc:
            _finish(handle, "error")
            return _error(422, exc.errors)
        except Exception as exc:  # noqa: BLE001 - the page shows what went wrong
            _finish(handle, "error")
            return _error(500, [{"param": "server", "message": f"could not prepare the run: {exc}"}])
        return StreamingResponse(_stream(request, experiment, handle), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip

    def _finish(handle: RunHandle, reason: str) -> None:
        handle.reason = handle.reason or reason
        if registry.active.get(handle.client) is handle:
            del registry.active[handle.client]
            registry.ended[handle.client] = handle.reason
        elif handle.client not in registry.active:
            registry.ended[handle.client] = handle.reason
        handle.finished.set()

    async def _stream(request: Request, experiment: Experiment, handle: RunHandle):
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        end = object()

        def worker() -> None:
            try:
                for message in experiment.frames(handle.cancel):
                    if message["type"] in ("done", "error"):
                        handle.reason = handle.reason or message["type"]
                    loop.call_soon_threadsafe(queue.put_nowait, message)
            except Exception as exc:  # noqa: BLE001 - reported to the page
                handle.reason = handle.reason or "error"
                loop.call_soon_threadsafe(queue.put_nowait, {"type": "error", "message": f"training failed: {exc}"})
            finally:
                handle.reason = handle.reason or "disconnected"
                try:
                    loop.call_soon_threadsafe(_finish, handle, handle.reason)
                    loop.call_soon_threadsafe(queue.put_nowait, end)
                except RuntimeError:  # the event loop is gone (server shut down)
                    handle.finished.set()

        thread = threading.Thread(target=worker, name=f"ntkit-demo-{handle.client}", daemon=True)
        try:
            yield _sse(experiment.init_message())
            thread.start()
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        break
                    if time.monotonic() - handle.started > max_wall_s:
                        registry.stop(handle.client, "time limit")
                    yield ": keep-alive\n\n"
                    continue
                if message is end:
                    break
                if message["type"] == "stopped":
                    message["reason"] = handle.reason
                yield _sse(message)
                if time.monotonic() - handle.started > max_wall_s:
                    registry.stop(handle.client, "time limit")
        finally:  # also when the server cancels this generator because the client went away
            if not handle.cancel.is_set() and not handle.finished.is_set():
                handle.reason = handle.reason or "disconnected"
                handle.cancel.set()
                logger.info("demo: client %s (%s) left during its run", handle.client, handle.address)
            if thread.ident is None:  # never started: nothing will finish it
                _finish(handle, handle.reason or "disconnected")

    routes = [
        Route("/", index),
        Route("/favicon.ico", favicon),
        Route("/vendor/plotly.min.js", vendor_plotly),
        Route("/api/params", params),
        Route("/api/run", run, methods=["POST"]),
        Route("/api/stop", stop, methods=["POST"]),
        Route("/api/limits", limits, methods=["POST"]),
        Route("/api/seed-example", seed_example),
        learning_curve_route(),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.registry = registry
    app.state.config = config
    return Guard(app, config)


def serve(host: str = "127.0.0.1", port: int = 8765, work_cap: float = DEFAULT_WORK_CAP, threads: int = 1,
          token: str | None = None, trusted_origins: tuple[str, ...] = ()) -> None:  # fmt: skip
    """Run the demo on uvicorn at http://host:port (127.0.0.1 by default: only this machine can reach it).

    ``threads`` sets torch's intra-op threads for the process. One thread per run is the default: the networks
    are small, and on a busy or shared machine a single thread trains them several times faster than a pool that
    has to wait for its cores (a width-8192 step on 40 points: 3 ms against 20 ms on two busy cores).

    A host other than a loopback address serves the network: the server prints a warning that says what is
    exposed. ``token`` (at least 8 characters) then guards the API; the printed address carries it as ``?token=``.
    ``trusted_origins`` are further origins whose pages may call the API (for a reverse proxy, say).
    """
    import torch
    import uvicorn

    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in [1, 65535]; got {port}")
    if threads < 1:
        raise ValueError(f"threads must be ≥ 1; got {threads}")
    app = create_app(work_cap=work_cap, host=host, port=port, token=token, trusted_origins=trusted_origins)
    torch.set_num_threads(threads)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/" + (f"?token={token}" if token else "")
    if not is_loopback(host):
        print(exposure_warning(host, port, token), file=sys.stderr, flush=True)
    print(f"ntkit demo: open {url} in a browser (Ctrl-C stops the server)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", limit_concurrency=64, timeout_keep_alive=5)


def exposure_warning(host: str, port: int, token: str | None) -> str:
    """What a server bound to ``host`` (not a loopback address) exposes, in words."""
    who = "every machine that can reach this one" if host in ("0.0.0.0", "::", "") else f"anyone who reaches {host}"
    guard = ("the API needs the token in the address below; the page and its static files do not"
             if token else "without a token anyone there can start training runs (rerun with --token to require "
             "one)")  # fmt: skip
    return (f"WARNING: ntkit demo listens on {host}:{port}: {who} on the network can open the page and use this "
            f"machine's CPU for training runs (each capped in work and wall time). It speaks plain HTTP, so the "
            f"token and the page travel unencrypted; {guard}.")  # fmt: skip
