"""The README's run, as a new user does it, in a real browser: ``python -m trainer --cfg
configs/cpu/default.yaml`` (fewer steps: the same two checkpoints the full run keeps, keep_last 2), then
``streamlit run app/dashboard.py`` on the repository's demo checkpoints and that run, opened at its front
door; every page, with the default selection (the newest run, then the six demos) and with the run alone,
shows no error box and no exception (issue 18: two-checkpoint sliders, Aligned codes' default pair)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.browser import chromium, no_exception, require_chromium, wait_rendered
from helpers.dashboard import PAGES, server_env
from helpers.servers import start_dashboard, stop

from app.pages import PAGES as REGISTRY

REPO = Path(__file__).resolve().parent.parent
NAV_LABELS = {p.key: p.title for p in REGISTRY}
RUN_LABEL = "run: default"


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    require_chromium()
    root = tmp_path_factory.mktemp("readme")
    runs = root / "runs"
    # The README's job; 40 steps instead of 300 keep CI short and leave what the README's run leaves:
    # two checkpoints (keep_last 2), validation rows, sample grids.
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "--cfg", str(REPO / "configs" / "cpu" / "default.yaml"), "--resume",
         f"out_dir={runs}", "train.steps=40", "train.ckpt_every=20", "train.val_every=20", "train.log_every=10",
         "train.threads=1"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list((runs / "default" / "checkpoints").glob("step-*"))) == 2
    # as the README runs it: runs/ is this test's (VQEXPLORE_RUNS, what --runs sets), checkpoints/ the demo set
    env = server_env(runs=runs, cache=root / "cache")
    proc, url = start_dashboard(env, root / "server.log")
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def _clean(tab, where: str) -> None:
    no_exception(tab)
    errors = tab.query_selector_all('[data-testid="stAlertContentError"]')
    assert not errors, f"{where}: " + " | ".join(e.inner_text()[:300] for e in errors)


def _every_page(tab, where: str) -> None:
    for key, heading in PAGES.items():
        if key != "compare":
            tab.get_by_test_id("stSidebarNav").get_by_role("link", name=NAV_LABELS[key]).click()
        tab.wait_for_selector(f"h1:has-text('{heading}')", timeout=300_000)
        tab.wait_for_selector("text=Page computed in", timeout=300_000)
        wait_rendered(tab, 300)
        _clean(tab, f"{where}, {key}")
        assert tab.get_by_text("Measured under:").count() >= 1, f"{where}, {key}: no protocol in the header"


def test_readme_run_opens_selected_and_every_page_works(readme_run, browser):
    tab = browser.new_page(viewport={"width": 1440, "height": 900})
    tab.goto(readme_run)  # the front door, as the README's command opens it
    tab.wait_for_selector("h1:has-text('Compare checkpoints')", timeout=300_000)
    tab.wait_for_selector("text=Page computed in", timeout=300_000)
    wait_rendered(tab, 300)
    # the newest run is selected, first (the selection is in the address: ckpt=...)
    from urllib.parse import parse_qs, urlparse

    deadline, labels = time.time() + 30, []
    while time.time() < deadline and not labels:
        labels = parse_qs(urlparse(tab.url).query).get("ckpt", [])
        time.sleep(0.2)
    assert labels and labels[0] == RUN_LABEL, tab.url
    demos = list((REPO / "checkpoints").glob("*/model.safetensors"))
    assert len(labels) == 1 + len(demos), labels  # the run and every demo checkpoint
    _every_page(tab, "default selection")
    tab.close()


def test_readme_run_alone_every_page_works(readme_run, browser):
    from urllib.parse import urlencode

    tab = browser.new_page(viewport={"width": 1440, "height": 900})
    tab.goto(f"{readme_run}/compare?{urlencode([('ckpt', RUN_LABEL)])}")
    _every_page(tab, "the run alone")
    tab.close()
