"""The dashboard's views (aligned codes, swipe, surgery, rate-distortion, shared links) in a real
browser (Debian chromium through playwright) on a real
``streamlit run app/dashboard.py``: the repository's demo checkpoints and a run trained here by the
trainer (SimVQ, 300 steps, a checkpoint every 60).

Deep links show the one navigation even as a fresh server's first request; Reconstructions draw
images at 256 px with a working swipe and flip; token surgery by clicking the token grid; the
rate-distortion view with the CPU sweep preset; aligned codes; a view's link reopens it.

Screenshots go to tests/artifacts/views/; with ``VQEXPLORE_SCREENSHOTS=1`` they also replace the
README's pictures in docs/screenshots/ (look at them before committing)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from app.pages import PAGES as REGISTRY
from test_dashboard import tree_digest
from helpers.browser import chromium, no_exception, require_chromium, wait_rendered
from helpers.dashboard import demo_names, server_env
from helpers.servers import start_dashboard, stop

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts" / "views"
DOCS = REPO / "docs" / "screenshots"
DEMOS = demo_names()  # as docs/demo_set.md lists them
# The menu as app/pages.py declares it (titles, in order).
NAV = [p.title for p in REGISTRY]


def test_the_demo_set_is_committed():
    """The demo set these views open is part of the repository (a missing one fails, never skips)."""
    missing = [d for d in DEMOS if not (REPO / "checkpoints" / d / "model.safetensors").is_file()]
    assert not missing, f"checkpoints/ lacks {missing}; run bash checkpoints/make_demos.sh"


def _query(*pairs) -> str:
    from urllib.parse import urlencode

    return "?" + urlencode(list(pairs))


DEMO_QUERY = [("ckpt", d) for d in ("vq-4096", "fsq-75555", "simvq-4096")] + [("size", "32"), ("n", "16")]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_chromium()
    root = tmp_path_factory.mktemp("views")
    runs = root / "runs"
    # A real run: the trainer, a CPU config row, a few hundred steps, several checkpoints.
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "--cfg", str(REPO / "configs" / "cpu" / "simvq-512.yaml"), "name=simvq-run",
         f"out_dir={runs}", "train.steps=300", "train.ckpt_every=60", "train.keep_last=10", "train.val_every=0",
         "train.log_every=60", "train.threads=1"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    before = tree_digest(REPO / "checkpoints")
    yield server_env(REPO / "checkpoints", runs, root / "cache", _root=str(root))
    assert tree_digest(REPO / "checkpoints") == before  # the demo checkpoints are only read


@pytest.fixture(scope="module")
def server(env):
    proc, url = start_dashboard(env, Path(env["_root"]) / "server.log")
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium() as b:
        yield b


def _tab(browser, height: int = 1100):
    return browser.new_page(viewport={"width": 1500, "height": height})


def _shot(target, name: str, **kw) -> None:
    """Save a screenshot under tests/artifacts/views/ (and docs/screenshots/ when asked)."""
    path = ARTIFACTS / f"{name}.png"
    target.screenshot(path=str(path), **kw)
    assert path.stat().st_size > 10_000
    if os.environ.get("VQEXPLORE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS / path.name)


def _done(tab, timeout_s: float = 180) -> None:
    """Until the page's script has run to its end (the footer's timing line) and drawn."""
    tab.wait_for_selector("text=Page computed in", timeout=timeout_s * 1000)
    wait_rendered(tab, timeout_s)


def _nav(tab) -> list[str]:
    links = tab.get_by_test_id("stSidebarNav").get_by_role("link")
    # each link reads "<icon ligature>\n\n<title>"
    return [links.nth(i).inner_text().strip().split("\n")[-1] for i in range(links.count())]


def test_deep_links_show_one_navigation_on_a_fresh_server(env, browser, tmp_path):
    proc, url = start_dashboard(env, tmp_path / "fresh.log")  # nobody has opened "/" on this server yet
    try:
        tab = _tab(browser)
        tab.goto(f"{url}/compare{_query(*DEMO_QUERY)}")
        tab.wait_for_selector("h1:has-text('Compare checkpoints')", timeout=120_000)
        wait_rendered(tab)
        no_exception(tab)
        assert _nav(tab) == NAV  # page titles, not file names; no extra "dashboard" entry
        assert tab.get_by_text("Page not found").count() == 0
        _wait_url(tab, lambda u: "ckpt=vq-4096" in u and "/compare" in u)
        _shot(tab, "navigation")
        for path, title in (("/aligned_codes", "Aligned codes"), ("/training", "Training"),
                            ("/", "Compare checkpoints")):
            other = _tab(browser)
            other.goto(f"{url}{path}")
            other.wait_for_selector(f"h1:has-text('{title}')", timeout=120_000)
            wait_rendered(other)
            assert _nav(other) == NAV, path
            if path == "/":
                _wait_url(other, lambda u: u.split("?")[0].endswith("/compare"))  # the front door is /compare
            other.close()
        tab.close()
    finally:
        stop(proc)


def _swipe_state(frame) -> str:
    return frame.locator(".layer.right").evaluate("el => el.style.clipPath")


def test_reconstructions_are_large_and_swipe(server, browser):
    tab = _tab(browser, 2400)
    tab.goto(f"{server}/reconstructions{_query(*DEMO_QUERY)}")
    tab.wait_for_selector("h1:has-text('Reconstructions')", timeout=120_000)
    _done(tab)
    no_exception(tab)
    assert tab.locator("iframe[title^='val 0: input vs']").count() == 3  # every selected checkpoint
    frame = tab.frame_locator("iframe[title='val 0: input vs vq-4096 reconstruction']")
    right = frame.locator("img.right")
    size = right.evaluate("img => [img.naturalWidth, img.clientWidth, getComputedStyle(img).imageRendering]")
    assert size == [32, 256, "pixelated"]  # a 32 px crop drawn 8x, nearest-neighbour
    assert _swipe_state(frame) == "inset(0px 0px 0px 50%)"
    frame.locator("input[type=range]").fill("20")
    assert _swipe_state(frame) == "inset(0px 0px 0px 20%)"
    frame.locator("button", has_text="Flip").click()
    assert _swipe_state(frame) == "inset(0px 0px 0px 0%)"  # all reconstruction
    frame.locator("button", has_text="Flip").click()
    assert _swipe_state(frame) == "inset(0px 0px 0px 100%)"  # all input
    box = frame.locator(".frame").bounding_box()
    tab.mouse.move(box["x"] + 0.75 * box["width"], box["y"] + box["height"] / 2)
    tab.mouse.down()
    tab.mouse.up()
    assert _swipe_state(frame).startswith("inset(0px 0px 0px 75")
    frame.locator("input[type=range]").fill("50")
    _shot(tab, "reconstructions_swipe", clip={"x": 300, "y": 0, "width": 1200, "height": 1250})
    tab.close()


def _overlap(a: dict, b: dict, tol: float = 1.0) -> bool:
    return (a["x"] + a["width"] - tol > b["x"] and b["x"] + b["width"] - tol > a["x"]
            and a["y"] + a["height"] - tol > b["y"] and b["y"] + b["height"] - tol > a["y"])


@pytest.mark.parametrize("mode", ["64", "native"])
def test_six_reconstructions_never_overlap(server, browser, tmp_path, mode):
    """The six demo checkpoints at 1440 x 900: no two swipe widgets overlap, none runs off the page,
    every Flip button lies inside its own frame and works, and the checkpoints of one image swipe
    and zoom together. Native mode: an uploaded 384 x 256 photo (drawn at its own size)."""
    from PIL import Image

    tab = browser.new_page(viewport={"width": 1440, "height": 900})
    query = [("ckpt", d) for d in DEMOS[:6]] + [("size", "64"), ("n", "16"), ("count", "2"), ("mode", mode)]
    tab.goto(f"{server}/reconstructions{_query(*query)}")
    tab.wait_for_selector("h1:has-text('Reconstructions')", timeout=120_000)
    _done(tab)
    if mode == "native":
        yy, xx = np.mgrid[0:256, 0:384]
        photo = np.stack([xx % 97 * 2, yy % 61 * 4, (xx + yy) % 256], -1).astype(np.uint8)
        Image.fromarray(photo).save(tmp_path / "wide.png")
        tab.get_by_text("upload your own").click()
        tab.locator("input[type=file]").set_input_files(str(tmp_path / "wide.png"))
        tab.wait_for_selector("iframe[title^='wide.png: input vs']", timeout=120_000)
        _done(tab)
    no_exception(tab)
    first = "wide.png" if mode == "native" else "val 0"
    frames = tab.locator("iframe[title*=': input vs']")
    n = frames.count()
    assert n == 6 * (1 if mode == "native" else 2)
    time.sleep(1.0)  # iframes size themselves to their content
    boxes = [frames.nth(i).bounding_box() for i in range(n)]
    main = tab.locator('[data-testid="stMain"]').bounding_box()
    for i, a in enumerate(boxes):
        assert a["width"] > 100 and a["height"] > 100, a
        assert a["x"] >= main["x"] - 1 and a["x"] + a["width"] <= min(1440, main["x"] + main["width"]) + 1, a
        for b in boxes[i + 1:]:
            assert not _overlap(a, b), (a, b)
    titles = [frames.nth(i).get_attribute("title") for i in range(n)]
    for title, box in zip(titles, boxes):
        frame = tab.frame_locator(f"iframe[title='{title}']")
        flip = frame.locator("button", has_text="Flip").bounding_box()
        img = frame.locator(".frame").bounding_box()
        for inner in (flip, img):  # inside its own iframe: nothing hidden under a neighbour
            assert inner["x"] >= box["x"] - 1 and inner["x"] + inner["width"] <= box["x"] + box["width"] + 1
            assert inner["y"] >= box["y"] - 1 and inner["y"] + inner["height"] <= box["y"] + box["height"] + 1
        if mode == "native":
            assert frame.locator("img.right").evaluate("i => i.naturalWidth") == 384
    group = [t for t in titles if t.startswith(f"{first}: input vs")]
    assert len(group) == 6
    if mode == "64":
        frames.first.scroll_into_view_if_needed()
        tab.mouse.wheel(0, -60)  # the first row's caption in view too
        time.sleep(0.5)
        _shot(tab, "reconstructions", full_page=False)
    lead = tab.frame_locator(f"iframe[title='{group[0]}']")
    lead.locator("button", has_text="Flip").click()  # clickable, and every checkpoint of the image follows
    lead.locator("button[data-testid=swipe-zoom-in]").click()
    for title in group:
        other = tab.frame_locator(f"iframe[title='{title}']")
        deadline = time.time() + 10
        while _swipe_state(other) != "inset(0px 0px 0px 0%)" and time.time() < deadline:
            time.sleep(0.1)
        assert _swipe_state(other) == "inset(0px 0px 0px 0%)", title
        assert other.locator("[data-testid=swipe-zoom]").inner_text() == "2x", title
        assert other.locator("img.right").evaluate("i => getComputedStyle(i).imageRendering") == "pixelated"
    tab.close()


def test_token_surgery_by_clicking_the_grid(server, browser):
    tab = _tab(browser, 2200)
    tab.goto(f"{server}/reconstructions{_query(*DEMO_QUERY, ('recon_count', '1'))}")
    tab.wait_for_selector("h1:has-text('Reconstructions')", timeout=120_000)
    _done(tab)
    chart = tab.locator(".st-key-surgery_grid_vq-4096_0")
    chart.scroll_into_view_if_needed()
    wait_rendered(tab)
    plot = chart.locator(".nsewdrag").first.bounding_box()
    # 32 px image, 8 x 8 tokens: cell (row 3, col 2) is centred on pixel (2*4+1.5, 3*4+1.5).
    x = plot["x"] + (2 * 4 + 1.5 + 0.5) / 32 * plot["width"]
    y = plot["y"] + (3 * 4 + 1.5 + 0.5) / 32 * plot["height"]
    # Plotly finds the clicked point from its hover state: hover first, as a hand does.
    tab.mouse.move(x - 3, y - 3)
    tab.mouse.move(x, y)
    time.sleep(0.5)
    tab.mouse.click(x, y)
    cells = tab.locator(".st-key-surgery_cells input")
    deadline = time.time() + 60
    while cells.input_value() != "3,2" and time.time() < deadline:
        time.sleep(0.2)
    assert cells.input_value() == "3,2"
    tab.wait_for_selector("text=PSNR, edited decode", timeout=60_000)
    wait_rendered(tab)
    no_exception(tab)
    _wait_url(tab, lambda u: "cells=3%2C2" in u or "cells=3,2" in u)
    # A box: type it (the grid's box / lasso select does the same).
    cells.fill("2-4,1-3")
    cells.press("Enter")
    tab.wait_for_selector("text=9 cells", timeout=60_000)
    wait_rendered(tab)
    no_exception(tab)
    section = tab.get_by_text("Token surgery: what does this token do here?")
    section.scroll_into_view_if_needed()
    top = section.bounding_box()["y"]
    _shot(tab, "token_surgery", clip={"x": 300, "y": max(0, top - 10), "width": 1200, "height": 1080})
    tab.close()


def test_rate_distortion_with_the_sweep_preset(server, browser):
    tab = _tab(browser, 1300)
    query = [("ckpt", d) for d in DEMOS] + [("size", "32"), ("n", "16"), ("view", "rd"), ("sweep", "1")]
    tab.goto(f"{server}/compare{_query(*query)}")
    tab.wait_for_selector("h1:has-text('Compare checkpoints')", timeout=120_000)
    _done(tab)
    no_exception(tab)
    chart = tab.locator(".st-key-rate_distortion")
    assert chart.locator(".main-svg").count() >= 1
    legend = chart.locator(".legend").text_content()
    for name in ("VQ · selected", "FSQ · selected", "SimVQ · selected", "VQ · CPU sweep", "FSQ · CPU sweep"):
        assert name in legend
    from trainer.sweep import read_rows
    from vqexplore.ratedistortion import points_from_sweep_rows

    rows = len(points_from_sweep_rows(read_rows(REPO / "docs" / "cpu_sweep.md")))
    assert chart.locator(".scatterlayer .point").count() == len(DEMOS) + rows
    _shot(tab, "rate_distortion", clip={"x": 300, "y": 0, "width": 1200, "height": 1000})
    tab.close()


def _href(tab) -> str:
    """The address bar as the page has it now (``tab.url`` only follows history.pushState once
    playwright has processed the event, which a plain sleep does not let it do)."""
    return tab.evaluate("location.href")


def _wait_url(tab, ok, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while not ok(_href(tab)) and time.time() < deadline:
        tab.wait_for_timeout(200)
    assert ok(_href(tab)), _href(tab)


def _selected(tab, key: str) -> str:
    """The value a selectbox shows (its combobox input, or the text beside it)."""
    box = tab.locator(f".st-key-{key}")
    inputs = box.locator("input")
    value = inputs.first.input_value() if inputs.count() else ""
    return value or box.inner_text().split("\n")[-1].strip()


def test_aligned_codes_and_a_shared_link(server, browser):
    tab = _tab(browser, 1900)
    tab.goto(f"{server}/aligned_codes{_query(('ckpt', 'run: simvq-run'), ('size', '32'), ('n', '16'))}")
    tab.wait_for_selector("h1:has-text('Aligned codes')", timeout=120_000)
    _done(tab)
    no_exception(tab)
    metrics = tab.get_by_test_id("stMetric")
    assert metrics.count() == 5 and "Token agreement" in metrics.nth(4).inner_text()
    assert tab.locator('[data-testid="stPlotlyChart"] .main-svg').count() >= 2
    _shot(tab, "aligned_codes", clip={"x": 300, "y": 0, "width": 1200, "height": 1850})
    # Choose another B; the address follows, and opening it elsewhere shows the same view.
    # The view is in the address from the start (the browser applies it just after the page's last delta).
    _wait_url(tab, lambda u: "b=simvq-run" in u and "300" in u)
    tab.get_by_test_id("stMainBlockContainer").get_by_role("combobox", name="Checkpoint B (later)").click()
    option = tab.get_by_role("option", name="simvq-run @ step 180")
    option.wait_for(state="visible")
    option.click()
    deadline = time.time() + 120
    while "step 180" not in _selected(tab, "align_b") and time.time() < deadline:
        time.sleep(0.2)
    wait_rendered(tab)
    _wait_url(tab, lambda u: "step+180" in u or "step%20180" in u)
    link = _href(tab)
    assert "b=simvq-run" in link and "180" in link
    shared = _tab(browser)
    shared.goto(link)
    shared.wait_for_selector("h1:has-text('Aligned codes')", timeout=120_000)
    _done(shared)
    assert _selected(shared, "align_b") == "simvq-run @ step 180"
    assert _selected(shared, "align_a") == "simvq-run @ step 60"
    shared.close()
    tab.close()
