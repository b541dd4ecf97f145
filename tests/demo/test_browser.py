"""The page in real headless Chromium (Debian's ``chromium`` package, driven by Playwright's Python client).

Enable locally with ``sudo apt-get install chromium`` (``make test`` does it when it runs as root). Without the
browser these tests skip, except in CI (``CI`` or ``NTKIT_REQUIRE_BROWSER=1`` set), where they fail instead.
Screenshots land in ``test-artifacts/demo/``. ``NTKIT_CHROMIUM=/path/to/chromium`` picks another executable.
"""

from __future__ import annotations

import pytest

from .conftest import ARTIFACTS, LiveServer

PLOTS = [f"plot-{kind}-{slot}" for kind in ("fn", "loss", "kernel", "slice", "spectrum") for slot in "AB"]


@pytest.fixture(scope="module")
def server():
    with LiveServer(n_frames=20) as s:
        yield s


def _set_range(page, selector: str, value: float) -> None:
    page.eval_on_selector(selector, "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input', "
                          "{ bubbles: true })); }", value)  # fmt: skip


def _predict(page, track: str, kernel: str) -> None:
    page.click(f"#guess-track label:has(input[value='{track}'])")
    page.click(f"#guess-kernel label:has(input[value='{kernel}'])")


def _run_and_wait(page, slot: str) -> None:
    page.click("#run")
    page.wait_for_selector(f"#reveal-{slot}:not([hidden])", timeout=120_000)


def test_a_narrow_and_a_wide_run_side_by_side(browser, server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    expected = "status of 422"  # the refusals this test provokes on purpose
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" and expected not in m.text else None)
    remote: list[str] = []
    page.on("request", lambda r: remote.append(r.url) if not r.url.startswith(server.url) else None)
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready='1']")
    page.screenshot(path=str(ARTIFACTS / "01-top-1280.png"))
    assert page.is_disabled("#run"), "the page must ask for a prediction before the first run"
    assert page.locator("#intuition math").count() > 0 and page.locator("#math math").count() > 2

    # A bad parameter: the server's message is shown next to the controls.
    _predict(page, "closely", "a little")
    page.fill("#steps", "99999")
    page.click("#run")
    page.wait_for_selector("#errors:not([hidden])")
    assert "steps" in page.inner_text("#errors") and "5000" in page.inner_text("#errors")
    page.fill("#steps", "150")

    # Run A: width 32. The prediction is committed before the run.
    _set_range(page, "#width", 5)
    assert page.inner_text("#width-out") == "n = 32"
    _run_and_wait(page, "A")
    assert page.is_hidden("#errors")
    assert page.is_checked("input[name='slot'][value='B']"), "after run A the next run goes into B"
    assert page.is_disabled("#run"), "each run asks for a fresh prediction"

    # Run B: width 4096.
    _predict(page, "closely", "a little")
    _set_range(page, "#width", 12)
    assert page.inner_text("#width-out") == "n = 4096"
    _run_and_wait(page, "B")

    for plot in PLOTS:
        traces = page.eval_on_selector(f"#{plot}", "el => (el.data || []).length")
        points = int(page.get_attribute(f"#{plot}", "data-points"))
        assert traces > 0 and points > 0, f"{plot} got no data"
    summary = page.evaluate("""() => { const s = ntkitDemo.state.slots;
        return { A: s.A.end.summary, B: s.B.end.summary, wA: s.A.params.width, wB: s.B.params.width }; }""")
    assert (summary["wA"], summary["wB"]) == (32, 4096)
    assert summary["B"]["max_gap"] < summary["A"]["max_gap"], summary
    assert summary["B"]["kernel_change"] < summary["A"]["kernel_change"], summary
    for slot in "AB":
        text = page.inner_text(f"#reveal-{slot}")
        assert "You predicted" in text and "What happened" in text
    assert page.get_attribute("#reveal-B", "data-track") == "closely"
    assert page.get_attribute("#reveal-A", "data-kernel") == "a lot"
    table = page.inner_text("#compare")
    assert "run A" in table and "run B" in table and "4096" in table

    page.screenshot(path=str(ARTIFACTS / "02-runs-1280.png"), full_page=True)
    page.locator("#experiment").screenshot(path=str(ARTIFACTS / "03-experiment-1280.png"))
    page.set_viewport_size({"width": 375, "height": 812})
    page.wait_for_timeout(600)  # Plotly resizes its plots to the new width
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "04-top-375.png"))
    page.locator("#experiment").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "05-controls-375.png"))
    page.locator("#reveal-A").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "06-reveal-375.png"))
    page.screenshot(path=str(ARTIFACTS / "07-full-375.png"), full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page scrolls sideways at phone width ({width}px)"
    assert not problems, problems
    assert not remote, f"the page loaded something from elsewhere: {remote}"
    page.close()


def test_stop_button_stops_a_run(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready='1']")
    _predict(page, "loosely", "a lot")
    _set_range(page, "#width", 8)
    page.fill("#steps", "5000")
    page.click("#run")
    page.wait_for_function("ntkitDemo.state.slots.A && ntkitDemo.state.slots.A.frames.length >= 2", timeout=60_000)
    page.click("#stop")
    page.wait_for_function("ntkitDemo.state.running === null", timeout=30_000)
    assert "stopped at step" in page.inner_text("#status")
    assert page.is_hidden("#reveal-A")
    page.close()
