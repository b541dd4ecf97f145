"""The lesson page in real headless Chromium: every section, the seed example's number, the practice loop, notes
that stay in the browser, a keyboard-only run, the phone layout, and axe-core's accessibility check.

axe-core comes from npm (``make axe`` installs it into .cache/npm, and ``make test`` depends on it); the test
injects it into the page, so the server never serves it. Screenshots land in ``test-artifacts/demo/``.
"""

from __future__ import annotations

import json

import pytest

from .conftest import ARTIFACTS, AXE, REQUIRED, LiveServer
from .test_seed_example import _numpy_mse, _tolerance, _torch_draws

SECTIONS = ("learning-map", "intuition", "storyboard", "math", "code", "seed-example", "experiment", "practice",
            "sources", "notes")  # fmt: skip


@pytest.fixture(scope="module")
def server():
    with LiveServer(n_frames=10) as s:
        yield s


def _open(browser, server, width: int = 1280, height: int = 900):
    page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready='1'][data-lesson='1']")
    return page, problems


def _tab_to(page, predicate_js: str, limit: int = 250) -> None:
    """Press Tab until the focused element satisfies ``predicate_js`` (an expression of ``el``), at most ``limit``
    times: the way a keyboard user reaches a control."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"(() => {{ const el = document.activeElement; return !!el && ({predicate_js}); }})()"):
            return
    raise AssertionError(f"no focusable element matching {predicate_js} within {limit} tabs")


def test_first_paint_needs_only_static_files(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    api: list[str] = []
    page.route("**/api/**", lambda route: (api.append(route.request.url), route.abort()))
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-lesson='1']")
    for section in SECTIONS:
        assert page.is_visible(f"#{section}"), section
    page.wait_for_selector("#story-plot[data-width='32']")  # the storyboard draws from static/storyboard.json
    assert "a weight moved" in page.inner_text("#story-text")
    assert page.locator("#practice-list form").count() >= 3
    assert page.locator("#eq-ntk").count() == 1 and page.locator("#code-empirical").count() == 1
    assert all("/api/" in url for url in api)  # the only round trips beyond static files are API calls, refused here
    page.close()


def test_every_section_renders_and_the_seed_example_matches_numpy(browser, server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page, problems = _open(browser, server)
    for section in SECTIONS:
        assert page.is_visible(f"#{section}"), section
    assert page.get_attribute("#learning-map .stages a[data-stage='intuition']", "aria-current") == "step"
    assert "over-parameterisation" in page.inner_text("#learning-map") and "scaling" in page.inner_text("#learning-map")
    page.wait_for_selector("#seed-output[data-mse-no-bias]", timeout=60_000)
    for key, bias in (("data-mse-no-bias", False), ("data-mse-bias", True)):
        draws = _torch_draws(bias)
        shown = float(page.get_attribute("#seed-output", key))
        assert shown == pytest.approx(_numpy_mse(*draws), rel=_tolerance(*draws))
    assert "0.16896" in page.inner_text("#seed-output")
    assert "ntkit.empirical_ntk(net, x_train)" in page.inner_text("#seed-code")
    page.locator("#code").scroll_into_view_if_needed()
    page.wait_for_function("document.body.dataset.stage === 'code'")
    assert "stage 3 of 4" in page.inner_text("#where")
    # The storyboard steps through its three widths from real runs.
    for width in ("512", "8192", "32"):
        page.click("#story-next")
        page.wait_for_selector(f"#story-plot[data-width='{width}']")
    board = json.loads((ARTIFACTS.parents[1] / "src/ntkit/demo/static/storyboard.json").read_text())
    assert [r["width"] for r in board["runs"]] == [32, 512, 8192]
    # Every claim links to an equation, a code line or a section that exists on the page.
    targets = page.eval_on_selector_all("#sources a[href^='#'], #learning-map a[href^='#']",
                                        "els => els.map((a) => a.getAttribute('href').slice(1))")  # fmt: skip
    assert {"eq-ntk", "eq-ode", "eq-closed-form", "code-kernel", "code-empirical", "code-predict"} <= set(targets)
    missing = [t for t in targets if page.locator(f"[id='{t}']").count() != 1]
    assert not missing, f"links to nothing: {missing}"
    # A source's scope button sets the experiment it points to.
    page.click("#source-jacot button.apply")
    assert page.inner_text("#width-out") == "n = 4096"
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "lesson-top-1280.png"))
    page.screenshot(path=str(ARTIFACTS / "lesson-full-1280.png"), full_page=True)
    assert not problems, problems
    page.close()


def test_the_practice_loop_reveals_only_after_a_commitment(browser, server):
    page, problems = _open(browser, server)
    forms = page.locator("#practice-list form")
    assert 3 <= forms.count() <= 5
    for i in range(forms.count()):
        form = forms.nth(i)
        answer = form.locator(".answer")
        assert answer.is_hidden() and form.locator("button.commit").is_disabled()
        form.locator("input[type=radio]").first.check()
        assert answer.is_hidden(), "choosing is not committing"
        form.locator("button.commit").click()
        assert answer.is_visible()
        text = answer.inner_text()
        assert "You committed to" in text and "Why:" in text and "See it:" in text
        assert form.locator("input[type=radio]:enabled").count() == 0, "a committed prediction cannot change"
    page.locator("#practice-alpha button.apply").click()
    assert page.inner_text("#width-out") == "n = 32" and page.inner_text("#alpha-out") == "α = 100"
    # Every pointer to the experiment leads to a setting the server accepts, with a stable learning rate.
    buttons = page.locator("#practice-list button.apply, #sources button.apply")
    assert buttons.count() == forms.count() + 2
    for i in range(buttons.count()):
        buttons.nth(i).click()
        limits = page.evaluate("""async () => { const r = await ntkitDemo.apiFetch('/api/limits',
            { method: 'POST', body: JSON.stringify(ntkitDemo.readParams()) }); return [r.status, await r.json()]; }""")
        status, body = limits
        assert status == 200 and body["work"] <= body["work_cap"], (i, body)
        assert page.evaluate("ntkitDemo.readParams().learning_rate") < body["max_learning_rate"], (i, body)
    assert not problems, problems
    page.close()


def test_a_note_stays_in_the_browser_survives_a_reload_and_exports(browser, server, tmp_path):
    page, problems = _open(browser, server)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method != "GET" or "/api/" in r.url else None)
    page.fill("#note-question", "Why does μP's kernel keep moving at n = 4096?")
    page.select_option("#note-kind", "setting")
    page.click("#note-attach")
    assert "n = " in page.input_value("#note-object")
    page.fill("#note-next", "Compare μP at 512 and 4096")
    page.click("#note-save")
    assert "Saved in this browser" in page.inner_text("#note-status")
    saved_requests = [u for u in sent if "/api/" in u and "limits" not in u]  # settings changes ask for limits only
    assert not saved_requests, f"saving a note talked to the server: {saved_requests}"
    page.reload()
    page.wait_for_selector("body[data-lesson='1']")
    assert "Why does μP's kernel keep moving" in page.inner_text("#note-list")
    sent.clear()
    with page.expect_download() as download:
        page.click("#note-export")
    path = tmp_path / "notes.md"
    download.value.save_as(path)
    text = path.read_text()
    assert text.startswith("# ntkit: research notes") and "## 1. Why does μP's kernel keep moving" in text
    assert "**Next step:** Compare μP at 512 and 4096" in text and "a setting of the experiment" in text
    assert not [u for u in sent if u.startswith(server.url)], f"exporting talked to the server: {sent}"
    assert not problems, problems
    page.close()


def test_a_keyboard_only_run(browser, server):
    page, problems = _open(browser, server)
    # Steps: a short run. The field is reached by keyboard and typed into.
    _tab_to(page, "el.id === 'steps'")
    page.keyboard.press("Control+A")
    page.keyboard.type("60")
    _tab_to(page, "el.name === 'guess-track'")
    page.keyboard.press("Space")
    _tab_to(page, "el.name === 'guess-kernel'")
    page.keyboard.press("ArrowRight")  # moves to, and checks, "a lot"
    assert page.evaluate("document.querySelector('input[name=guess-kernel]:checked').value") == "a lot"
    _tab_to(page, "el.id === 'run'")
    assert page.is_enabled("#run")
    page.keyboard.press("Enter")
    page.wait_for_selector("#reveal-A:not([hidden])", timeout=120_000)
    assert "You predicted" in page.inner_text("#reveal-A")
    # A practice question, by keyboard: choose, commit, read.
    _tab_to(page, "el.name === 'practice-double'")
    page.keyboard.press("Space")
    _tab_to(page, "el.classList.contains('commit')")
    page.keyboard.press("Enter")
    assert page.is_visible("#answer-double")
    assert not problems, problems
    page.close()


def test_phone_layout_and_accessibility(browser, server):
    if not AXE.is_file():
        message = f"axe-core is not installed at {AXE}; run `make axe` (npm install into .cache/npm)"
        pytest.fail(message) if REQUIRED else pytest.skip(message)
    page, problems = _open(browser, server, width=375, height=812)
    page.wait_for_selector("#seed-output[data-mse-no-bias]", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "lesson-top-375.png"))
    page.locator("#practice-list form").first.locator("input[type=radio]").first.check()
    page.locator("#practice-list form").first.locator("button.commit").click()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page scrolls sideways at phone width ({width}px)"
    page.locator("#practice").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "lesson-practice-375.png"))
    page.screenshot(path=str(ARTIFACTS / "lesson-full-375.png"), full_page=True)
    page.add_script_tag(path=str(AXE))
    results = page.evaluate("axe.run(document, { resultTypes: ['violations'] })")
    serious = [(v["id"], v["impact"], v["help"], [n["target"] for n in v["nodes"]][:3])
               for v in results["violations"] if v["impact"] in ("serious", "critical")]  # fmt: skip
    assert not serious, serious
    page.set_viewport_size({"width": 1280, "height": 900})
    page.wait_for_timeout(300)
    results = page.evaluate("axe.run(document, { resultTypes: ['violations'] })")
    serious = [(v["id"], v["help"], [n["target"] for n in v["nodes"]][:3])
               for v in results["violations"] if v["impact"] in ("serious", "critical")]  # fmt: skip
    assert not serious, serious
    assert not problems, problems
    page.close()


def test_the_page_carries_the_token(browser):
    token = "lesson-token-1234"
    with LiveServer(token=token, n_frames=4) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{server.url}/?token={token}")
        page.wait_for_selector("#seed-output[data-mse-no-bias]", timeout=60_000)  # an API call that needs it
        page.goto(server.url + "/")  # the tab keeps it without the query
        page.wait_for_selector("#seed-output[data-mse-no-bias]", timeout=60_000)
        other = browser.new_page()
        other.goto(server.url + "/")  # a fresh tab without it: the page says what is missing
        other.wait_for_function("document.getElementById('seed-output').textContent.includes('token')")
        other.wait_for_selector("#errors:not([hidden])")
        assert "?token=" in other.inner_text("#errors")
        other.close()
        page.close()
