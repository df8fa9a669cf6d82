"""The one browser harness: Debian's chromium through playwright, and waiting until a Streamlit page
has rendered. Servers (free port, start, health wait, stop) are in ``helpers.servers``."""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: the browser tests need Debian's chromium "
                    f"(apt-get install chromium) or CHROMIUM=/path/to/chromium")


@contextlib.contextmanager
def chromium():
    """A headless chromium (playwright's Browser) for the duration of the block."""
    from playwright.sync_api import sync_playwright

    require_chromium()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def wait_rendered(tab, timeout_s: float = 180) -> None:
    """Until a Streamlit page's script run is over (no running indicator for a moment) and its
    charts are drawn."""
    deadline = time.time() + timeout_s
    tab.wait_for_selector('[data-testid="stApp"]', timeout=timeout_s * 1000)
    quiet_since = None
    while time.time() < deadline:
        running = tab.query_selector('[data-testid="stStatusWidget"]') is not None
        running = running or tab.query_selector('[data-testid="stSkeleton"]') is not None  # not drawn yet
        charts = tab.query_selector_all('[data-testid="stPlotlyChart"]')
        drawn = all(c.query_selector(".main-svg") is not None for c in charts)
        if not running and drawn and tab.query_selector("h1") is not None:
            quiet_since = quiet_since or time.time()
            if time.time() - quiet_since >= 0.3:
                return
        else:
            quiet_since = None
        time.sleep(0.1)
    raise TimeoutError("page did not finish rendering")


def no_exception(tab) -> None:
    """No Streamlit exception box on the page."""
    assert tab.query_selector('[data-testid="stException"]') is None, tab.inner_text("body")[:2000]


def upload_to_demo(page, path) -> None:
    """Put an image file into the Gradio demo's input (``#input-image``) and wait until it reached the
    server: the preview is shown and the page's network has settled."""
    from playwright.sync_api import expect

    page.locator("#input-image input[type=file]").set_input_files(str(path))
    expect(page.locator("#input-image img").first).to_be_visible(timeout=30_000)
    page.wait_for_load_state("networkidle")


def run_demo(page, n_images: int, timeout_s: float = 90) -> None:
    """Click the demo's Run (``#run``) and wait for ``n_images`` images in ``#results``.

    Once in some CI runs the click started no request at all (the server log showed none, the page no
    error): not diagnosed. If nothing came back within ``timeout_s``, a second click tells a lost click
    from a broken demo, which still fails."""
    from playwright.sync_api import expect

    images = page.locator("#results img")
    page.locator("#run").click()
    try:
        expect(images).to_have_count(n_images, timeout=timeout_s * 1000)
    except AssertionError:
        page.locator("#run").click()
        expect(images).to_have_count(n_images, timeout=timeout_s * 1000 + 30_000)
