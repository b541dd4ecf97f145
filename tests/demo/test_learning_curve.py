"""The learning-curve panel: its API (checks at the door, JSON shape, the curve it draws) and the page in a real
browser."""

from __future__ import annotations

import math

import httpx
import numpy as np
import pytest

from ntkit.demo.learning_curve import POOL, RIDGE, compute
from ntkit.theory import learning_curve, spectrum

from .conftest import ARTIFACTS


def test_api_returns_the_predicted_and_measured_curves(live_server):
    with httpx.Client(base_url=live_server.url, timeout=120) as http:
        response = http.post("/api/learning-curve", json={"depth": 1, "activation": "relu", "task": "sin", "seed": 2})
    assert response.status_code == 200
    body = response.json()
    assert len(body["n"]) == len(body["predicted"]) > 10 and body["ridge"] == RIDGE and body["pool"] == POOL
    predicted = np.array(body["predicted"])
    assert np.all(np.isfinite(predicted)) and np.all(predicted >= 0)
    assert predicted[-1] < 0.1 * predicted[0], "more data must lower the predicted error of sin(3x) by far"
    for point in body["measured"]:
        assert point["mean"] >= 0 and point["stderr"] >= 0 and math.isfinite(point["mean"])
    eigenvalues = np.array(body["eigenvalues"])
    assert np.all(np.diff(eigenvalues) <= 0) and eigenvalues[-1] >= 0


def test_the_curve_is_the_theory_applied_to_the_pool_spectrum():
    # the same computation written out from ntkit.theory: the panel adds nothing of its own to the prediction
    import torch

    from ntkit.data.tasks import sample_interactive
    from ntkit.demo.experiment import B_STD, W_STD
    from ntkit.regimes import mlp_spec

    result = compute(depth=1, activation="erf", task="circles", seed=3)
    g = torch.Generator().manual_seed(3)
    x, y = sample_interactive("circles", POOL, g)
    s = spectrum(mlp_spec(8, 1, 1, "erf", W_STD, B_STD), x)
    v = s.coefficients(y).numpy()
    noise = max(0.0, float((y**2).mean()) - float(np.sum(v**2)))
    expected = learning_curve(s.eigenvalues.numpy(), v, result["n"], ridge=RIDGE, noise=noise).test_mse
    np.testing.assert_allclose(result["predicted"], expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"depth": 9}, "depth"),
        ({"activation": "swish"}, "activation"),
        ({"task": "mnist"}, "task"),
        ({"seed": -1}, "seed"),
        ({"width": 64}, "width"),
        ([1, 2], "body"),
    ],
)
def test_api_refuses_bad_parameters_by_name(live_server, body, param):
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        response = http.post("/api/learning-curve", json=body)
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert any(e["param"] == param for e in errors), errors


def test_panel_draws_the_curve_in_the_browser(browser, live_server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    remote: list[str] = []
    page.on("request", lambda r: remote.append(r.url) if not r.url.startswith(live_server.url) else None)
    page.goto(live_server.url + "/")
    page.wait_for_selector("#lc-run:not([disabled])")
    page.select_option("#task", "spirals")
    page.click("#lc-run")
    page.wait_for_selector("#learning-curve[data-done='1']", timeout=120_000)
    traces = page.eval_on_selector("#lc-plot", "el => (el.data || []).map(t => t.x.length)")
    assert len(traces) == 2 and traces[0] > 10 and traces[1] == 6
    assert "spectrum from" in page.inner_text("#lc-status")
    assert page.is_hidden("#lc-errors")
    page.locator("#learning-curve").screenshot(path=str(ARTIFACTS / "learning-curve.png"))
    assert not problems, problems
    assert not remote, f"requests left the server: {remote}"
    page.close()
