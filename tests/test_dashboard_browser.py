"""The dashboard in a real browser: `streamlit run app/dashboard.py` on a free port, Debian's
chromium through playwright. Opens every page, switches checkpoint, uploads a non-image,
watches the Training page pick up new points by itself, and saves screenshots to
tests/artifacts/dashboard/ (gitignored)."""
from pathlib import Path

import pytest

from app.pages import PAGES as REGISTRY
from helpers.browser import chromium, no_exception, require_chromium, wait_rendered
from helpers.dashboard import PAGES, server_env
from helpers.servers import start_dashboard, stop
from test_dashboard import build_fixture_tree, write_metrics

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts" / "dashboard"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_chromium()
    paths = build_fixture_tree(tmp_path_factory.mktemp("browser"))
    env = server_env(paths["checkpoints"], paths["runs"], paths["cache"])
    proc, url = start_dashboard(env, paths["cache"].parent / "server.log")
    yield {"url": url, **paths}
    stop(proc)


@pytest.fixture(scope="module")
def page(server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        yield browser.new_page(viewport={"width": 1400, "height": 1000})



NAV_LABELS = {p.key: p.title for p in REGISTRY}  # the navigation's labels (app/pages.py)


def test_every_page_renders(server, page):
    page.goto(server["url"])  # the app's front door; then the sidebar navigation, as a user would
    for name, title in PAGES.items():
        if name != "compare":
            page.get_by_test_id("stSidebarNav").get_by_role("link", name=NAV_LABELS[name]).click()
        page.wait_for_selector(f"h1:has-text('{title}')", timeout=120000)
        wait_rendered(page)
        no_exception(page)
        assert page.inner_text("h1").strip() == title
        assert page.query_selector('[data-testid="stAlertContainer"] >> text=unexpected') is None
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        if name in ("compare", "codebook_usage", "codebook_health", "code_embeddings", "code_inspector", "training"):
            assert page.query_selector('[data-testid="stPlotlyChart"] .main-svg') is not None, name
    # A deep link works too (a new session straight onto a page).
    page.goto(f"{server['url']}/code_inspector")
    wait_rendered(page)
    no_exception(page)
    assert page.inner_text("h1").strip() == "Code inspector"


def test_switch_checkpoint(server, page):
    page.goto(f"{server['url']}/codebook_usage")
    wait_rendered(page)
    captions = page.locator('[data-testid="stCaptionContainer"]').all_inner_texts()  # protocol header, checkpoint
    # The page's own selectbox (the sidebar has the "Checkpoints" multiselect).
    page.get_by_test_id("stMainBlockContainer").get_by_role("combobox", name="Checkpoint", exact=True).click()
    page.get_by_role("option", name="vq-l2-128").click()
    page.wait_for_selector("text=K=128", timeout=60000)
    wait_rendered(page)
    no_exception(page)
    assert page.locator('[data-testid="stCaptionContainer"]').all_inner_texts() != captions
    page.screenshot(path=str(ARTIFACTS / "codebook_usage_switched.png"), full_page=True)
    # The choice carries over to the other single-checkpoint pages (in-app navigation).
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Code inspector").click()
    page.wait_for_selector("h1:has-text('Code inspector')")
    wait_rendered(page)
    assert "K=128" in "\n".join(page.locator('[data-testid="stCaptionContainer"]').all_inner_texts())
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
    no_exception(page)
    assert page.inner_text("h1").strip() == "Reconstructions"
    assert bogus.read_text() == "this is text, not a PNG"
    page.screenshot(path=str(ARTIFACTS / "reconstructions_bad_upload.png"), full_page=True)


def test_training_page_refreshes_by_itself(server, page):
    page.goto(f"{server['url']}/training")
    wait_rendered(page)
    page.wait_for_selector("text=last step 30")
    write_metrics(server["run"], range(31, 46), mode="a")  # the run goes on writing
    page.wait_for_selector("text=last step 45", timeout=30000)  # no reload, no click
    no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "training_live.png"), full_page=True)
