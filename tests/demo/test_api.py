"""The demo's HTTP API against a live server: assets served locally, every refusal, the work cap, the stream,
stopping, disconnecting, and one run per client."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from ntkit.demo.app import STATIC
from ntkit.demo.params import FRAME_COST_STEPS

SMALL = {"width": 64, "steps": 20, "learning_rate": 0.3, "task": "sin", "seed": 1}
LONG = {"width": 1024, "steps": 5000, "learning_rate": 0.3, "task": "sin"}  # 3073 parameters × 5000 < the 2e7 cap


def events(response: httpx.Response) -> Iterator[dict]:
    """The JSON messages of a text/event-stream response, in order (comments skipped)."""
    for line in response.iter_lines():
        if line.startswith("data:"):
            yield json.loads(line[5:])


def run(server, client: str, **params) -> list[dict]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        with http.stream("POST", "/api/run", json={**params, "client": client}) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            return list(events(response))


def test_page_and_scripts_come_from_this_server(live_server):
    with httpx.Client(base_url=live_server.url) as http:
        page = http.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        html = page.text
        for section in ("intuition", "math", "code", "experiment"):
            assert f'id="{section}"' in html
        assert html.count("<math") >= 8  # equations are MathML, rendered by the browser itself
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "the page must load nothing remote"
        for path in ("/static/demo.js", "/static/demo.css"):
            asset = http.get(path)
            assert asset.status_code == 200
            assert "http://" not in asset.text and "https://" not in asset.text
        plotly = http.get("/vendor/plotly.min.js")
        assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
        assert "javascript" in plotly.headers["content-type"]
        assert http.get("/static/nope.js").status_code == 404


def test_static_files_ship_with_the_package():
    assert {p.name for p in STATIC.iterdir()} >= {"index.html", "demo.js", "demo.css"}


def test_params_endpoint_gives_the_ranges(live_server):
    body = httpx.get(f"{live_server.url}/api/params").json()
    assert body["spec"]["width"]["min"] == 16 and body["spec"]["width"]["max"] == 8192
    assert body["spec"]["parameterization"]["choices"] == ["ntk", "standard", "mup"]
    assert body["work_cap"] == 2e7
    assert set(body["thresholds"]) == {"track", "kernel"}


@pytest.mark.parametrize(
    ("name", "value"),
    [("width", 8), ("depth", 7), ("activation", "sigmoid"), ("parameterization", "xavier"), ("alpha", 1000),
     ("learning_rate", -0.1), ("steps", 0), ("task", "mnist"), ("seed", -3)],
)  # fmt: skip
def test_a_bad_parameter_answers_422_naming_it(live_server, name, value):
    response = httpx.post(f"{live_server.url}/api/run", json={**SMALL, name: value, "client": "bad"})
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["param"] == name and error["message"].startswith(name) and repr(value) in error["message"]
    limits = httpx.post(f"{live_server.url}/api/limits", json={**SMALL, name: value})
    assert limits.status_code == 422 and limits.json()["errors"][0]["param"] == name


def test_bad_bodies_and_client_ids(live_server):
    url = f"{live_server.url}/api/run"
    assert httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    assert httpx.post(url, json=[1, 2]).status_code == 422
    for client in (None, "", "a b", "x" * 65, 3, "ab\n", "\nab", "ab\r\n"):
        response = httpx.post(url, json={**SMALL, "client": client})
        assert response.status_code == 422 and response.json()["errors"][0]["param"] == "client"
    response = httpx.post(url, json={**SMALL, "client": "ok", "widht": 3})
    assert response.status_code == 422 and "unknown parameter 'widht'" in response.json()["errors"][0]["message"]
    assert httpx.post(f"{live_server.url}/api/stop", json={}).status_code == 422


def test_the_work_cap_is_enforced_by_the_server(live_server):
    response = httpx.post(f"{live_server.url}/api/run", json={**SMALL, "width": 4096, "steps": 5000, "client": "c"})
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    # 12,289 parameters; 10 frames + 1 each cost FRAME_COST_STEPS steps: steps ≤ 2e7/12289 − 40·11 = 1187.5
    assert FRAME_COST_STEPS == 40
    assert error["param"] == "steps" and "cap" in error["message"] and "at most 1,187 steps" in error["message"]
    limits = httpx.post(f"{live_server.url}/api/limits", json={**SMALL, "width": 4096, "steps": 5000}).json()
    assert limits["work"] == 12289 * (5000 + 40 * 11) and limits["work_cap"] == 2e7
    assert limits["n_parameters"] == 12289


def test_an_unstable_learning_rate_is_refused_with_the_limit(live_server):
    limits = httpx.post(f"{live_server.url}/api/limits", json=SMALL).json()
    lr_max = limits["max_learning_rate"]
    assert 0.3 < lr_max < 10
    response = httpx.post(f"{live_server.url}/api/run", json={**SMALL, "learning_rate": 1.5 * lr_max, "client": "c"})
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["param"] == "learning_rate" and f"{lr_max:.3g}" in error["message"]


def test_the_stream_carries_init_frames_and_done(live_server):
    messages = run(live_server, "stream", **SMALL)
    init, *frames, done = messages
    assert init["type"] == "init" and done["type"] == "done"
    assert [f["type"] for f in frames] == ["frame"] * len(frames)
    assert [f["step"] for f in frames] == init["times"] == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    assert init["params"] == {**SMALL, "depth": 1, "activation": "relu", "parameterization": "ntk", "alpha": None}
    assert init["kernel_source"]["id"] == "analytic" and "width" in init["kernel_source"]["label"]
    assert len(init["task"]["x_train"]) == 40 and len(init["task"]["x_test"]) == 200
    assert len(init["limit"]["eigs"]) == 40 and len(init["initial"]["slice"]) == 200
    for frame in frames:
        assert len(frame["net"]["f"]) == len(frame["ntk"]["f"]) == 200
        assert len(frame["kernel"]["eigs"]) == 40 and len(frame["kernel"]["slice"]) == 200
        assert frame["net"]["train_loss"] > 0 and frame["gap"] >= 0
    assert frames[0]["gap"] == 0 and frames[0]["kernel"]["relative_change"] == 0  # both start from the net's f0
    assert frames[-1]["net"]["train_loss"] < frames[0]["net"]["train_loss"]
    assert done["summary"]["max_gap"] == max(f["gap"] for f in frames)
    assert done["summary"]["kernel_change"] == frames[-1]["kernel"]["relative_change"]
    assert done["verdict"]["track"] in ("closely", "loosely") and done["verdict"]["kernel"] in ("a little", "a lot")
    assert live_server.wait_ended("stream") == "done"


def test_a_2d_task_streams_a_grid(live_server):
    init, *frames, done = run(live_server, "grid", width=32, steps=4, task="spirals", learning_rate=0.2)
    assert init["task"]["dims"] == 2 and len(init["task"]["x_train"]) == 64 and len(init["task"]["x_train"][0]) == 2
    size = init["task"]["grid_size"]
    assert len(frames[-1]["net"]["f"]) == size * size and 0 <= frames[-1]["net"]["test_accuracy"] <= 1
    assert done["type"] == "done"


def _first_frame(response: httpx.Response) -> Iterator[dict]:
    stream = events(response)
    assert next(stream)["type"] == "init"
    assert next(stream)["type"] == "frame"
    return stream


def test_stop_ends_the_run(live_server):
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        with http.stream("POST", "/api/run", json={**LONG, "client": "stopper"}) as response:
            stream = _first_frame(response)
            assert http.post("/api/stop", json={"client": "stopper"}).json() == {"stopped": True}
            rest = list(stream)
    assert rest[-1]["type"] == "stopped" and rest[-1]["reason"] == "stopped"
    assert rest[-1]["step"] < LONG["steps"]
    assert live_server.wait_ended("stopper") == "stopped"
    assert httpx.post(f"{live_server.url}/api/stop", json={"client": "stopper"}).json() == {"stopped": False}


def test_leaving_ends_the_run(live_server):
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        with http.stream("POST", "/api/run", json={**LONG, "client": "leaver"}) as response:
            stream = _first_frame(response)  # noqa: F841 - held open until the block closes the connection
            assert "leaver" in live_server.registry.active
    # the connection is closed: the server notices and stops training
    assert live_server.wait_ended("leaver") == "disconnected"


def test_one_run_per_client_a_new_run_replaces_the_old(live_server):
    with httpx.Client(base_url=live_server.url, timeout=60) as first, httpx.Client(base_url=live_server.url) as second:
        with first.stream("POST", "/api/run", json={**LONG, "client": "twice"}) as old:
            stream = _first_frame(old)
            with second.stream("POST", "/api/run", json={**SMALL, "client": "twice"}) as new:
                rest = list(stream)
                assert rest[-1] == {"type": "stopped", "step": rest[-1]["step"], "reason": "replaced"}
                assert [m["type"] for m in events(new)][-1] == "done"
    assert list(live_server.registry.active) == []


def test_runs_beyond_the_server_limit_are_refused(live_server):
    with httpx.Client(base_url=live_server.url, timeout=60) as a, httpx.Client(base_url=live_server.url) as b:
        with a.stream("POST", "/api/run", json={**LONG, "client": "a"}) as ra, \
                b.stream("POST", "/api/run", json={**LONG, "client": "b"}) as rb:  # fmt: skip
            streams = [_first_frame(ra), _first_frame(rb)]  # keep them: dropping one closes its connection
            busy = httpx.post(f"{live_server.url}/api/run", json={**SMALL, "client": "c"})
            assert busy.status_code == 503 and "busy" in busy.json()["errors"][0]["message"]
            for client in ("a", "b"):
                httpx.post(f"{live_server.url}/api/stop", json={"client": client})
            assert [list(s)[-1]["reason"] for s in streams] == ["stopped", "stopped"]
    for client in ("a", "b"):
        assert live_server.wait_ended(client) == "stopped"
    time.sleep(0.1)
    assert live_server.registry.active == {}
