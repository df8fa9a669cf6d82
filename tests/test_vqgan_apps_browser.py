"""An imported 256-px VQGAN tokenizer (LlamaGen layout, 16,384 codes, f16, small widths so it runs
on CPU) in the real apps: every dashboard page (streamlit + Debian chromium, as
tests/test_dashboard_browser.py) and the Gradio demo (as tests/test_gradio_app.py), with no error
anywhere. Screenshots go to tests/artifacts/vqgan/ (gitignored)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vqexplore
from trainer.cli import main
from helpers.published import llamagen_shapes, random_state
from helpers.browser import chromium, require_chromium, wait_rendered
from helpers.servers import start_dashboard, start_demo, stop

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts" / "vqgan"
PAGES = {"compare": "Compare checkpoints", "codebook_usage": "Codebook usage", "codebook_health": "Codebook health",
         "code_embeddings": "Code embeddings", "reconstructions": "Reconstructions", "code_inspector": "Code inspector",
         "aligned_codes": "Aligned codes"}
# LlamaGen VQ-16's layout (ch_mult [1, 1, 2, 2, 4]: f16, 16 x 16 tokens at 256 px; 16,384 codes of
# dim 8, l2-normalised), 16x narrower than published (ch 8, GroupNorm 8 groups) to run on CPU.
SMALL = dict(codebook_size=16384, code_dim=8, ch=8, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=1, z_channels=32)


def _import(tmp: Path, name: str, seed: int, out_root: Path) -> Path:
    state = random_state(llamagen_shapes(**SMALL), seed)
    torch.save({"model": state}, tmp / f"{name}.pt")
    out = out_root / name
    assert main(["import", "llamagen", str(tmp / f"{name}.pt"), "--out", str(out), "--norm-groups", "8"]) == 0
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    require_chromium()
    root = tmp_path_factory.mktemp("vqgan-apps")
    ckpts = root / "checkpoints"
    a = _import(root, "llamagen-a", 0, ckpts)
    _import(root, "llamagen-b", 1, ckpts)
    model = vqexplore.load(a)
    assert (model.downsample, model.resolution, model.codebook_size) == (16, 256, 16384)
    (root / "runs").mkdir()
    (root / "cache").mkdir()
    return root


def test_an_imported_256px_vqgan_opens_on_every_dashboard_page(tree):
    env = {**os.environ, "VQEXPLORE_CHECKPOINTS": str(tree / "checkpoints"), "VQEXPLORE_RUNS": str(tree / "runs"),
           "VQEXPLORE_CACHE_DIR": str(tree / "cache"), "HF_HUB_OFFLINE": "1"}
    proc, url = start_dashboard(env, tree / "dashboard.log")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        with chromium() as browser:
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            for name, title in PAGES.items():
                tab.goto(f"{url}/{name}?n=16")  # 16 validation images: the sidebar's smallest sample
                tab.wait_for_selector(f"h1:has-text('{title}')", timeout=180_000)
                wait_rendered(tab, 300)
                body = tab.inner_text("body")
                assert tab.query_selector('[data-testid="stException"]') is None, body[:2000]
                assert tab.query_selector('[data-testid="stAlertContentError"]') is None, body[:2000]
                tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
                if name == "codebook_usage":
                    assert "K=16384" in body or "16,384" in body, body[:1000]
                if name == "reconstructions":  # 256 px crops (each 16 x 16 = 256 tokens)
                    assert "256 x 256 crop" in body, body[:2000]
            # The sidebar's image size followed the checkpoints' training resolution (the page's link says it).
            assert "size=256" in tab.url, tab.url
    finally:
        stop(proc)


def test_an_imported_256px_vqgan_in_the_demo(tree, tmp_path):
    from playwright.sync_api import expect

    upload = tmp_path / "upload.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(upload)
    proc, url, log_path = start_demo(tmp_path, tree / "checkpoints")
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url, wait_until="networkidle", timeout=60_000)
            page.locator("#input-image input[type=file]").set_input_files(str(upload))
            expect(page.locator("#input-image img").first).to_be_visible(timeout=30_000)
            page.locator("#run").click()
            images = page.locator("#results img")
            expect(images).to_have_count(3 * 2, timeout=180_000)
            for i in range(images.count()):  # the training resolution: 256 x 256, 16 x 16 tokens
                assert images.nth(i).evaluate("img => img.complete && img.naturalWidth") == 256
            expect(page.locator("#numbers")).to_contain_text("16x16")
            expect(page.locator("#notes")).to_contain_text("256x256")
            assert page.locator(".toast-body.error").count() == 0
            page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)
            assert not errors, errors
    finally:
        stop(proc)
    assert "Traceback" not in log_path.read_text()
