"""VQGAN tokenizers in the real apps: every dashboard page (streamlit + Debian chromium, as
tests/test_dashboard_browser.py) and the Gradio demo (as tests/test_gradio_app.py), with no error
anywhere, for
- an imported 256-px tokenizer (LlamaGen layout, 16,384 codes, f16, small widths so it runs on CPU);
- the CPU VQGAN row's own checkpoints (configs/cpu/vqgan-vq-l2-1024.yaml: VQGAN f4 at 64 px with the
  PatchGAN stage), trained here by ``python -m trainer`` for 4 steps (the discriminator on from step 2)
  and exported by ``python -m trainer export``, as a user of the row would.
Screenshots go to tests/artifacts/vqgan/<kind>/ (gitignored)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vqexplore
from trainer.cli import main
from helpers.published import llamagen_shapes, random_state
from helpers.browser import chromium, require_chromium, run_demo, upload_to_demo, wait_rendered
from helpers.dashboard import server_env
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


def _train_cpu_row(root: Path, ckpts: Path) -> Path:
    """The CPU VQGAN row, 4 steps with the adversarial loss from step 2, both checkpoints exported."""
    runs = root / "row-runs"
    assert main(["--cfg", str(REPO / "configs/cpu/vqgan-vq-l2-1024.yaml"), f"out_dir={runs}", "train.steps=4",
                 "loss.disc_start=2", "train.ckpt_every=2", "train.keep_last=2", "train.log_every=1",
                 "data.train=builtin", "data.val=builtin"]) == 0
    run = runs / "cpu-vqgan-vq-l2-1024"
    for step in (2, 4):
        assert main(["export", "--ckpt", str(run / "checkpoints" / f"step-0000000{step}"),
                     "--to", str(ckpts / f"cpu-vqgan-step{step}")]) == 0
    return ckpts / "cpu-vqgan-step4"


# kind -> (downsampling, training resolution, codebook size, token grid at that resolution)
KINDS = {"imported-256px": (16, 256, 16384, "16x16"), "cpu-row": (4, 64, 1024, "16x16")}


@pytest.fixture(scope="module", params=list(KINDS))
def tree(request, tmp_path_factory):
    require_chromium()
    kind = request.param
    root = tmp_path_factory.mktemp(f"vqgan-apps-{kind}")
    ckpts = root / "checkpoints"
    if kind == "imported-256px":
        first = _import(root, "llamagen-a", 0, ckpts)
        _import(root, "llamagen-b", 1, ckpts)
    else:
        first = _train_cpu_row(root, ckpts)
    model = vqexplore.load(first)
    assert (model.downsample, model.resolution, model.codebook_size) == KINDS[kind][:3]
    assert model.arch == "vqgan"
    (root / "runs").mkdir()
    (root / "cache").mkdir()
    root.joinpath("kind").write_text(kind)
    return root


def test_a_vqgan_opens_on_every_dashboard_page(tree):
    kind = (tree / "kind").read_text()
    f, side, k, grid = KINDS[kind]
    artifacts = ARTIFACTS / kind
    env = server_env(tree / "checkpoints", tree / "runs", tree / "cache", HF_HUB_OFFLINE="1")
    proc, url = start_dashboard(env, tree / "dashboard.log")
    artifacts.mkdir(parents=True, exist_ok=True)
    try:
        with chromium() as browser:
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            for name, title in PAGES.items():
                # 16 validation images: the sidebar's smallest sample. The CPU row's attention runs at the token
                # grid, so its usage over whole images at 512 px (128 x 128 tokens) costs 6.6 s an image on
                # 2 cores: that row is opened with usage over the crops (the sidebar's other choice).
                tab.goto(f"{url}/{name}?n=16" + ("&usage=crops" if kind == "cpu-row" else ""))
                tab.wait_for_selector(f"h1:has-text('{title}')", timeout=180_000)
                wait_rendered(tab, 300)
                body = tab.inner_text("body")
                assert tab.query_selector('[data-testid="stException"]') is None, body[:2000]
                assert tab.query_selector('[data-testid="stAlertContentError"]') is None, body[:2000]
                tab.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
                if name == "codebook_usage":
                    assert f"K={k}" in body or f"{k:,}" in body, body[:1000]
                if name == "reconstructions":  # crops at the training resolution
                    assert f"{side} x {side} crop" in body, body[:2000]
            # The sidebar's image size followed the checkpoints' training resolution (the page's link says it).
            assert f"size={side}" in tab.url, tab.url
    finally:
        stop(proc)


def test_a_vqgan_in_the_demo(tree, tmp_path):
    from playwright.sync_api import expect

    kind = (tree / "kind").read_text()
    f, side, k, grid = KINDS[kind]
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
            upload_to_demo(page, upload)
            run_demo(page, 3 * 2)
            images = page.locator("#results img")
            for i in range(images.count()):  # the training resolution, and its token grid
                assert images.nth(i).evaluate("img => img.complete && img.naturalWidth") == side
            expect(page.locator("#numbers")).to_contain_text(grid)
            expect(page.locator("#notes")).to_contain_text(f"{side}x{side}")
            assert page.locator(".toast-body.error").count() == 0
            (ARTIFACTS / kind).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / kind / "demo.png"), full_page=True)
            assert not errors, errors
    finally:
        stop(proc)
    assert "Traceback" not in log_path.read_text()
