"""Refresh docs/demo.png: the lesson page in headless Chromium after two real runs (n = 32 and n = 4096).

    PYTHONPATH=src python docs/make_demo_png.py      # needs chromium, playwright and Pillow (matplotlib's)
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.demo.conftest import LiveServer, _chromium  # noqa: E402


def main() -> None:
    from playwright.sync_api import sync_playwright

    with LiveServer(n_frames=40) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(server.url + "/")
        page.wait_for_selector("body[data-ready='1'][data-lesson='1']")
        page.wait_for_selector("#seed-output[data-mse-no-bias]")
        for width in (5, 12):  # log2: n = 32, then n = 4096
            page.click("#guess-track label:has(input[value='closely'])")
            page.click("#guess-kernel label:has(input[value='a little'])")
            page.eval_on_selector("#width", "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input', "
                                  "{ bubbles: true })); }", width)  # fmt: skip
            page.click("#run")
            slot = "A" if width == 5 else "B"
            page.wait_for_selector(f"#reveal-{slot}:not([hidden])", timeout=300_000)
        page.click("#story-next")
        page.click("#story-next")
        page.wait_for_timeout(800)
        shots = [page.locator(sel).screenshot() for sel in ("header.top", "#storyboard", "#compare", ".plots")]
        browser.close()
    images = [Image.open(io.BytesIO(s)).convert("RGB") for s in shots]
    images[-1] = images[-1].crop((0, 0, images[-1].width, min(images[-1].height, 1000)))
    width = max(i.width for i in images)
    canvas = Image.new("RGB", (width, sum(i.height + 12 for i in images)), "#f4f6f9")
    y = 0
    for image in images:
        canvas.paste(image, (0, y))
        y += image.height + 12
    canvas.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(ROOT / "docs" / "demo.png", optimize=True)


if __name__ == "__main__":
    main()
