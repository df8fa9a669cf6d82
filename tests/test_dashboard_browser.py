"""The dashboard in a real browser: `streamlit run app/dashboard.py` on a free port, Debian's
chromium through playwright. Opens every page, switches checkpoint, uploads a non-image,
watches the Training page pick up new points by itself, and saves screenshots to
tests/artifacts/dashboard/ (gitignored)."""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from app.pages import PAGES as REGISTRY
from helpers.dashboard import PAGES
from test_dashboard import build_fixture_tree, write_metrics

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO / "tests" / "artifacts" / "dashboard"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: the browser test needs Debian's chromium "
                    f"(apt-get install chromium) or CHROMIUM=/path/to/chromium")
    paths = build_fixture_tree(tmp_path_factory.mktemp("browser"))
    port = _free_port()
    env = {**os.environ, "VQEXPLORE_CHECKPOINTS": str(paths["checkpoints"]), "VQEXPLORE_RUNS": str(paths["runs"]),
           "VQEXPLORE_CACHE_DIR": str(paths["cache"])}
    log = open(paths["cache"].parent / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "dashboard.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("streamlit did not start: " + (paths["cache"].parent / "server.log").read_text()[-2000:])
            time.sleep(0.2)
    yield {"url": url, **paths}
    proc.terminate()
    try:
        proc.wait(3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield tab
        browser.close()


def wait_rendered(tab, timeout_s: float = 180) -> None:
    """Until the script run is over (no running indicator for a moment) and charts are drawn."""
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


def _no_exception(tab) -> None:
    assert tab.query_selector('[data-testid="stException"]') is None, tab.inner_text("body")[:2000]


NAV_LABELS = {p.key: p.title for p in REGISTRY}  # the navigation's labels (app/pages.py)


def test_every_page_renders(server, page):
    page.goto(server["url"])  # the app's front door; then the sidebar navigation, as a user would
    for name, title in PAGES.items():
        if name != "compare":
            page.get_by_test_id("stSidebarNav").get_by_role("link", name=NAV_LABELS[name]).click()
        page.wait_for_selector(f"h1:has-text('{title}')", timeout=120000)
        wait_rendered(page)
        _no_exception(page)
        assert page.inner_text("h1").strip() == title
        assert page.query_selector('[data-testid="stAlertContainer"] >> text=unexpected') is None
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        if name in ("compare", "codebook_usage", "codebook_health", "code_embeddings", "code_inspector", "training"):
            assert page.query_selector('[data-testid="stPlotlyChart"] .main-svg') is not None, name
    # A deep link works too (a new session straight onto a page).
    page.goto(f"{server['url']}/code_inspector")
    wait_rendered(page)
    _no_exception(page)
    assert page.inner_text("h1").strip() == "Code inspector"


def test_switch_checkpoint(server, page):
    page.goto(f"{server['url']}/codebook_usage")
    wait_rendered(page)
    caption = page.inner_text('[data-testid="stCaptionContainer"]')
    # The page's own selectbox (the sidebar has the "Checkpoints" multiselect).
    page.get_by_test_id("stMainBlockContainer").get_by_role("combobox", name="Checkpoint", exact=True).click()
    page.get_by_role("option", name="vq-l2-128").click()
    page.wait_for_selector("text=K=128", timeout=60000)
    wait_rendered(page)
    _no_exception(page)
    assert page.inner_text('[data-testid="stCaptionContainer"]') != caption
    page.screenshot(path=str(ARTIFACTS / "codebook_usage_switched.png"), full_page=True)
    # The choice carries over to the other single-checkpoint pages (in-app navigation).
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Code inspector").click()
    page.wait_for_selector("h1:has-text('Code inspector')")
    wait_rendered(page)
    assert "K=128" in page.inner_text('[data-testid="stCaptionContainer"]')
    page.screenshot(path=str(ARTIFACTS / "code_inspector_switched.png"), full_page=True)


def test_upload_that_is_not_an_image(server, page, tmp_path):
    page.goto(f"{server['url']}/reconstructions")
    wait_rendered(page)
    page.get_by_text("upload your own").click()
    wait_rendered(page)
    bogus = tmp_path / "notes.png"
    bogus.write_text("this is text, not a PNG")
    page.set_input_files('[data-testid="stFileUploaderDropzoneInput"]', str(bogus))
    page.wait_for_selector("text=notes.png is not a readable image", timeout=60000)
    wait_rendered(page)
    _no_exception(page)
    assert page.inner_text("h1").strip() == "Reconstructions"
    assert bogus.read_text() == "this is text, not a PNG"
    page.screenshot(path=str(ARTIFACTS / "reconstructions_bad_upload.png"), full_page=True)


def test_training_page_refreshes_by_itself(server, page):
    page.goto(f"{server['url']}/training")
    wait_rendered(page)
    page.wait_for_selector("text=last step 30")
    write_metrics(server["run"], range(31, 46), mode="a")  # the run goes on writing
    page.wait_for_selector("text=last step 45", timeout=30000)  # no reload, no click
    _no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "training_live.png"), full_page=True)
