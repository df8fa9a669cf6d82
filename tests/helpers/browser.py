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
