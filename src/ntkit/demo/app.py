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
                           count and the work (parameters × steps) against the cap, or 422 for bad parameters

Each client has at most one run: a new run from the same client stops the old one first. A run stops when its
client disconnects or asks to stop; it trains in a worker thread that checks a cancellation flag every step.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
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
from ntkit.demo.learning_curve import learning_curve_route
from ntkit.demo.params import DEFAULT_WORK_CAP, SPEC, TASK_SHAPES, ParamError, n_parameters, parse_params, work

STATIC = Path(__file__).resolve().parent / "static"
CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Runs the server trains at once, over all clients.
DEFAULT_MAX_RUNS = 2


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


def create_app(work_cap: float = DEFAULT_WORK_CAP, n_frames: int = DEFAULT_FRAMES,
               max_runs: int = DEFAULT_MAX_RUNS) -> Starlette:  # fmt: skip
    """The demo app.

    Parameters
    ----------
    work_cap:
        The most parameters × steps one run may start (:func:`ntkit.demo.params.parse_params`).
    n_frames:
        Frames streamed per run after t = 0.
    max_runs:
        Runs trained at once over all clients; more are answered 503.
    """
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
        if not isinstance(client, str) or not CLIENT_ID.match(client):
            return _error(422, [{"param": "client", "message": "client must be an id of 1 to 64 letters, digits, "
                                 f"'-' or '_'; got {client!r:.80}"}])  # fmt: skip
        return body

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
            checked = parse_params(raw, work_cap=float("inf"))
        except ParamError as exc:
            return _error(422, exc.errors)
        lr_max = await anyio.to_thread.run_sync(stable_learning_rate, checked)
        d, o = TASK_SHAPES[checked.task]
        return JSONResponse({"max_learning_rate": lr_max, "work": work(checked), "work_cap": work_cap,
                             "n_parameters": n_parameters(checked.width, checked.depth, d, o)})  # fmt: skip

    async def run(request: Request) -> Response:
        body = await _body(request)
        if isinstance(body, Response):
            return body
        client = body["client"]
        try:
            run_params = parse_params({k: v for k, v in body.items() if k != "client"}, work_cap=work_cap)
        except ParamError as exc:
            return _error(422, exc.errors)
        async with registry.lock:
            old = registry.stop(client, "replaced")
            if old is not None:
                await anyio.to_thread.run_sync(old.finished.wait, 10.0)
            if len(registry.active) - (client in registry.active) >= registry.max_runs:
                return _error(503, [{"param": "server", "message": f"the server is busy with {registry.max_runs} "
                                     "runs from other pages; try again in a moment"}])  # fmt: skip
            handle = registry.active[client] = RunHandle(client)
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
                    yield ": keep-alive\n\n"
                    continue
                if message is end:
                    break
                if message["type"] == "stopped":
                    message["reason"] = handle.reason
                yield _sse(message)
        finally:  # also when the server cancels this generator because the client went away
            if not handle.cancel.is_set() and not handle.finished.is_set():
                handle.reason = handle.reason or "disconnected"
                handle.cancel.set()
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
        learning_curve_route(),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.registry = registry
    return app


def serve(host: str = "127.0.0.1", port: int = 8765, work_cap: float = DEFAULT_WORK_CAP, threads: int = 1) -> None:
    """Run the demo on uvicorn at http://host:port (127.0.0.1 by default: only this machine can reach it).

    ``threads`` sets torch's intra-op threads for the process. One thread per run is the default: the networks
    are small, and on a busy or shared machine a single thread trains them several times faster than a pool that
    has to wait for its cores (a width-8192 step on 40 points: 3 ms against 20 ms on two busy cores).
    """
    import torch
    import uvicorn

    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in [1, 65535]; got {port}")
    if threads < 1:
        raise ValueError(f"threads must be ≥ 1; got {threads}")
    torch.set_num_threads(threads)
    print(f"ntkit demo: open http://{host}:{port}/ in a browser (Ctrl-C stops the server)", flush=True)
    uvicorn.run(create_app(work_cap=work_cap), host=host, port=port, log_level="warning")
