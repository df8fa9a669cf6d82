"""The demo's results page in a real browser (Debian chromium) with the six demo checkpoints of
checkpoints/ (issue 18): every caption whole, every checkpoint visible without a scroll box, a crisp
preview without a blurred backdrop, and the old results (the surgery's grid and cells included)
cleared once another example photo is picked."""
from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from helpers.browser import chromium, require_chromium
from helpers.dashboard import demo_names
from helpers.servers import ROOT, start_demo, stop

DEMOS = demo_names()  # as docs/demo_set.md lists them; the demo shows every one
ARTIFACTS = ROOT / "tests" / "artifacts" / "gradio"


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    require_chromium()
    tmp = tmp_path_factory.mktemp("gradio-layout")
    proc, url, _ = start_demo(tmp, ROOT / "checkpoints")
    try:
        yield url
    finally:
        stop(proc)


def _scroll_boxes(page, selector: str) -> list:
    """Elements under ``selector`` that scroll their content (a hidden part)."""
    return page.evaluate("""(sel) => [...document.querySelectorAll(sel + ' *')].filter(e => {
        const s = getComputedStyle(e);
        return (s.overflowY === 'auto' || s.overflowY === 'scroll') && e.scrollHeight > e.clientHeight + 2;
    }).map(e => e.className)""", selector)


def test_six_checkpoints_whole_captions_crisp_preview_and_cleared_results(demo_url, tmp_path):
    from playwright.sync_api import expect

    yy, xx = np.mgrid[0:200, 0:300]
    Image.fromarray(np.stack([xx % 256, yy, (xx * yy) % 256], -1).astype(np.uint8)).save(tmp_path / "up.png")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(demo_url, wait_until="networkidle", timeout=60_000)
            page.locator("#input-image input[type=file]").set_input_files(str(tmp_path / "up.png"))
            expect(page.locator("#input-image img").first).to_be_visible(timeout=30_000)
            page.locator("#run").click()
            images = page.locator("#results img")
            expect(images).to_have_count(3 * len(DEMOS), timeout=120_000)
            time.sleep(1.0)
            assert _scroll_boxes(page, "#results") == []  # no scroll box hides a checkpoint
            gallery = page.locator("#results").bounding_box()
            for i in range(images.count()):
                box = images.nth(i).bounding_box()
                assert box["y"] >= gallery["y"] - 1 and box["y"] + box["height"] <= gallery["y"] + gallery["height"] + 1
            captions = page.locator("#results .caption-label")
            assert captions.count() == 3 * len(DEMOS)
            for i in range(captions.count()):
                cut = captions.nth(i).evaluate("c => [c.scrollWidth - c.clientWidth, c.scrollHeight - c.clientHeight,"
                                               " getComputedStyle(c).textOverflow]")
                assert cut[0] <= 1 and cut[1] <= 1 and cut[2] != "ellipsis", (i, cut)
            text = " ".join(captions.all_inner_texts())
            assert all(name in text for name in DEMOS) and "PSNR" in text
            page.screenshot(path=str(ARTIFACTS / "gradio_six.png"), full_page=True)
            images.first.click()  # the preview: crisp pixels, no blurred copy behind them
            preview = page.locator("#results .preview")
            expect(preview).to_be_visible(timeout=10_000)
            assert preview.evaluate("e => getComputedStyle(e).backdropFilter") in ("none", "")
            big = page.locator("#results .preview img").first
            assert big.evaluate("i => getComputedStyle(i).imageRendering") == "pixelated"
            assert big.evaluate("i => i.clientWidth > i.naturalWidth")  # enlarged, nearest-neighbour
            page.keyboard.press("Escape")
            # The surgery's grid of this image, then another photo: nothing of the old one stays.
            page.locator("#surgery-show").click()
            expect(page.locator("#surgery-grid img").first).to_be_visible(timeout=60_000)
            page.locator("#surgery-cells textarea").fill("3,4")
            page.get_by_role("button", name="coffee", exact=True).click()
            expect(page.locator("#results img")).to_have_count(0, timeout=30_000)
            expect(page.locator("#surgery-grid img")).to_have_count(0, timeout=30_000)
            assert page.locator("#surgery-cells textarea").input_value() == ""
            assert "Input" not in page.locator("#notes").inner_text()
            assert page.locator(".toast-body.error").count() == 0
        finally:
            browser.close()
