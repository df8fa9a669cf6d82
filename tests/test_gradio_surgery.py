"""Token surgery in the Gradio demo (app/gradio_surgery.py): the real server of test_gradio_app,
through gradio_client (pixel-exact against vqexplore.surgery, bad input as one sentence) and a
real browser (click cells on the grid, apply, see the edited decode)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.browser import CHROMIUM, chromium, upload_to_demo
from test_gradio_app import ARTIFACTS, client, photo, server  # noqa: F401
from vqexplore import load
from vqexplore.reconstruct import prepare_image, reconstruct
from vqexplore.surgery import parse_cells, token_surgery


@pytest.fixture()
def upload(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(photo(80, 96, seed=5)).save(path)
    return path


def _expected(checkpoint: Path, upload: Path, cells: str, code: int):
    model = load(checkpoint)
    prepared = prepare_image(np.asarray(Image.open(upload).convert("RGB")), "64")
    [r] = reconstruct(model, [prepared])
    return token_surgery(model, r.indices, parse_cells(cells, r.indices.shape), code, original=prepared)


def test_surgery_api_matches_the_library(server, client, upload):  # noqa: F811
    from gradio_client import handle_file

    _, checkpoints = server
    grid, note = client.predict(handle_file(str(upload)), "tiny-vq", "64", "2-3,4-5", api_name="/surgery_grid")
    picture = np.asarray(Image.open(grid))
    assert picture.shape == (384, 384, 3)  # 64 px drawn 6x: clickable cells of 24 px
    assert "16 x 16 tokens of 64 codes; 4 cell(s) selected" in note
    assert (picture[2 * 24, 4 * 24 + 12] == [255, 0, 255]).all()  # the selected box is outlined
    (before, after), changed, notes = client.predict(handle_file(str(upload)), "tiny-vq", "64", "2-3,4-5", "id", 7,
                                                     api_name="/surgery")
    expected = _expected(checkpoints["tiny-vq"], upload, "2-3,4-5", 7)
    # Lossless PNG, enlarged 6x nearest-neighbour: exactly the library's decodes.
    np.testing.assert_array_equal(np.asarray(Image.open(before))[::6, ::6], expected.before)
    np.testing.assert_array_equal(np.asarray(Image.open(after))[::6, ::6], expected.after)
    assert np.asarray(Image.open(changed)).shape == (384, 384, 3)
    assert f"edited decode **{expected.psnr_after:.2f} dB** ({expected.psnr_delta:+.2f} dB)" in notes
    assert f"{int(expected.changed.sum())} pixels changed" in notes
    # The nearest other code: the untrained tiny FSQ maps the whole image to one code, so only
    # "any code" has a nearest other code.
    _, _, notes = client.predict(handle_file(str(upload)), "tiny-fsq", "64", "0,0", "nearest-any", 0,
                                 api_name="/surgery")
    assert "the nearest other code to" in notes and "tiny-fsq" in notes
    with pytest.raises(Exception, match="is the only code on this image's grid"):
        client.predict(handle_file(str(upload)), "tiny-fsq", "64", "0,0", "nearest", 0, api_name="/surgery")


@pytest.mark.parametrize("cells,pick,code,message", [
    ("", "id", 1, "No cells selected"),
    ("0,99", "id", 1, "outside the 16 x 16 token grid"),
    ("one", "id", 1, "type row,col"),
    ("0,0", "id", 64, "Code 64 does not exist: tiny-vq has codes 0 to 63."),
])
def test_surgery_bad_input_is_one_sentence(client, upload, cells, pick, code, message):  # noqa: F811
    from gradio_client import handle_file

    with pytest.raises(Exception) as info:
        client.predict(handle_file(str(upload)), "tiny-vq", "64", cells, pick, code, api_name="/surgery")
    assert message in str(info.value)


def test_surgery_unknown_checkpoint(client, upload):  # noqa: F811
    from gradio_client import handle_file

    with pytest.raises(Exception, match=r"nope is not in the list of choices: \['tiny-fsq', 'tiny-vq'\]"):
        client.predict(handle_file(str(upload)), "nope", "64", "0,0", "id", 1, api_name="/surgery")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium at /usr/bin/chromium")
def test_browser_click_cells_and_apply(server, upload):  # noqa: F811
    from playwright.sync_api import expect

    url, _ = server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url, wait_until="networkidle", timeout=60_000)
            upload_to_demo(page, upload)
            page.locator("#surgery-show").click()
            grid = page.locator("#surgery-grid img").first
            expect(grid).to_be_visible(timeout=60_000)
            expect(page.locator("#surgery-grid-note")).to_contain_text("16 x 16 tokens")
            box = grid.bounding_box()
            cell = box["width"] / 16
            # Click the centre of cell (row 3, col 5), then of (row 8, col 10).
            cells = page.locator("#surgery-cells textarea")
            grid.click(position={"x": 5.5 * cell, "y": 3.5 * cell})
            expect(cells).to_have_value("3,5", timeout=30_000)
            page.locator("#surgery-grid img").first.click(position={"x": 10.5 * cell, "y": 8.5 * cell})
            expect(cells).to_have_value("3,5; 8,10", timeout=30_000)
            expect(page.locator("#surgery-grid-note")).to_contain_text("2 cell(s) selected", timeout=30_000)
            # A box from two corners.
            page.get_by_text("two clicks: corners of a box").click()
            page.locator("#surgery-grid img").first.click(position={"x": 1.5 * cell, "y": 12.5 * cell})
            expect(page.locator("#surgery-grid-note")).to_contain_text("box corner at 12,1", timeout=30_000)
            page.locator("#surgery-grid img").first.click(position={"x": 2.5 * cell, "y": 13.5 * cell})
            expect(cells).to_have_value(re.compile(r"12,1; 12,2; 13,1; 13,2"), timeout=30_000)
            page.get_by_text("a code id", exact=True).click()
            page.locator("#surgery-code input").fill("7")
            page.locator("#surgery-apply").click()
            expect(page.locator("#surgery-notes")).to_contain_text("→ code 7", timeout=60_000)
            expect(page.locator("#surgery-notes")).to_contain_text("pixels changed")
            expect(page.locator("#surgery-slider img").first).to_be_visible()
            assert page.locator(".toast-body.error").count() == 0
            page.locator("#surgery").screenshot(path=str(ARTIFACTS / "gradio_surgery.png"))
            assert not errors, errors
        finally:
            browser.close()


DEMOS = Path(__file__).resolve().parents[1] / "checkpoints"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium")
def test_browser_surgery_on_the_demo_checkpoints(tmp_path):
    """The README's picture: the demo set, a built-in photo, a box of cells moved to the nearest code.
    With VQEXPLORE_SCREENSHOTS=1 it replaces docs/screenshots/gradio_surgery.png."""
    import os
    import shutil

    from helpers.servers import ROOT, start_demo, stop
    from playwright.sync_api import expect

    from vqexplore.data import builtin_photos

    name, img = builtin_photos("val")[0]
    upload = tmp_path / f"{name}.png"
    Image.fromarray(img).save(upload)
    proc, url, _ = start_demo(tmp_path, DEMOS)
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(url, wait_until="networkidle", timeout=60_000)
            upload_to_demo(page, upload)
            page.locator("#surgery-show").click()
            grid = page.locator("#surgery-grid img").first
            expect(page.locator("#surgery-grid-note")).to_contain_text("16 x 16 tokens", timeout=60_000)
            cell = grid.bounding_box()["width"] / 16
            page.get_by_text("two clicks: corners of a box").click()
            grid.click(position={"x": 6.5 * cell, "y": 5.5 * cell})
            expect(page.locator("#surgery-grid-note")).to_contain_text("box corner", timeout=30_000)
            page.locator("#surgery-grid img").first.click(position={"x": 9.5 * cell, "y": 7.5 * cell})
            expect(page.locator("#surgery-cells textarea")).to_have_value("5-7,6-9", timeout=30_000)
            page.locator("#surgery-apply").click()
            expect(page.locator("#surgery-notes")).to_contain_text("pixels changed", timeout=60_000)
            expect(page.locator("#surgery-slider img").first).to_be_visible()
            assert page.locator(".toast-body.error").count() == 0
            page.locator("#surgery").scroll_into_view_if_needed()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "gradio_surgery.png"
            page.locator("#surgery").screenshot(path=str(shot))
            browser.close()
        if os.environ.get("VQEXPLORE_SCREENSHOTS") == "1":
            (ROOT / "docs" / "screenshots").mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, ROOT / "docs" / "screenshots" / "gradio_surgery.png")
    finally:
        stop(proc)
