"""The Gradio demo (app/gradio_app.py) end to end: a real server in a subprocess, driven through
``gradio_client`` (every image mode, every bad input, 20 clients at once) and through a real
browser (Debian chromium + playwright). Returned images are lossless PNG, so reconstructions
are compared pixel for pixel with a direct ``vqexplore.reconstruct`` call."""
from __future__ import annotations

import concurrent.futures
import io
import os
import shutil
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.browser import CHROMIUM, chromium, run_demo, upload_to_demo
from helpers.servers import start_demo, stop

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "gradio_app.py"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHECKPOINTS = {  # tiny models: the demo's code paths, not its quality
    "tiny-vq": dict(quantizer="vq", codebook_size=64, code_dim=8, hidden_dim=16, n_resblocks=1),
    "tiny-fsq": dict(quantizer="fsq", levels=[4, 4, 3], hidden_dim=16, n_resblocks=1),
}


# ------------------------------------------------------------------------------------------
# Server
# ------------------------------------------------------------------------------------------

def make_checkpoints(folder: Path) -> dict[str, Path]:
    from vqexplore import VQModel

    paths = {}
    for i, (name, cfg) in enumerate(CHECKPOINTS.items()):
        torch.manual_seed(i)
        VQModel(**cfg).save_pretrained(folder / name)
        paths[name] = folder / name
    return paths


ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
_lpips_file: list[Path] = []  # the weights the module's server computes LPIPS with


def lpips_weights(torch_home: Path) -> Path:
    """A stand-in for the download of torchvision's AlexNet weights (no network here): an AlexNet
    ``features`` state dict with seeded random values, where torch's hub cache keeps the real
    file. LPIPS reads only these tensors, so the demo computes a real (if uncalibrated) LPIPS."""
    from torchvision.models import alexnet

    torch.manual_seed(0)
    state = {k: v for k, v in alexnet().state_dict().items() if k.startswith("features.")}
    path = torch_home / "hub" / "checkpoints" / ALEXNET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The demo on a free port with tiny checkpoints and LPIPS weights in its TORCH_HOME; yields
    (url, {name: checkpoint folder})."""
    tmp = tmp_path_factory.mktemp("gradio")
    checkpoints = make_checkpoints(tmp / "checkpoints")
    _lpips_file[:] = [lpips_weights(tmp / "torch-home")]
    proc, url, log_path = start_demo(tmp, tmp / "checkpoints", TORCH_HOME=str(tmp / "torch-home"))
    try:
        yield url, checkpoints
    finally:
        stop(proc)
        if os.environ.get("VQEXPLORE_TEST_VERBOSE"):
            print(log_path.read_text()[-4000:])


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server[0], verbose=False, ssl_verify=False)


# ------------------------------------------------------------------------------------------
# Images of every kind
# ------------------------------------------------------------------------------------------

def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image with some edges (uint8 (h, w, 3)), different per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    f = rng.uniform(2, 9, size=(3, 2))
    chans = [np.sin(2 * np.pi * (f[c, 0] * x + f[c, 1] * y) + c) for c in range(3)]
    img = (np.stack(chans, -1) * 0.4 + 0.5)
    img[h // 3: h // 2, w // 4: w // 2] = rng.uniform(size=3)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png16_rgb(img16: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (colour type 2, depth 16), which PIL cannot write."""
    h, w, _ = img16.shape
    raw = b"".join(b"\x00" + img16[r].astype(">u2").tobytes() for r in range(h))
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))


def write_good_images(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    base = photo(150, 200, seed=1)
    files = {}

    def save(name, im, **kw):
        files[name] = folder / name
        im.save(files[name], **kw)

    save("rgb.jpg", Image.fromarray(base), quality=90)
    save("rgb.png", Image.fromarray(base))
    save("gray.png", Image.fromarray(base).convert("L"))
    save("gray16.png", Image.fromarray((base[..., 0].astype(np.uint16) * 257)))
    files["rgb16.png"] = folder / "rgb16.png"
    files["rgb16.png"].write_bytes(png16_rgb(base.astype(np.uint16) * 257))
    rgba = np.dstack([base, np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (150, 1))])
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    pal = Image.fromarray(base).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    save("palette.png", pal, transparency=0)
    save("lossy.webp", Image.fromarray(base), quality=80)
    save("lossless.webp", Image.fromarray(base), lossless=True)
    save("large.jpg", Image.fromarray(photo(1100, 1500, seed=2)), quality=85)  # over the native budget
    save("odd.png", Image.fromarray(photo(67, 93, seed=3)))  # sides not multiples of 4
    return files


def write_bad_images(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase the error message must contain)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = io.BytesIO()
    Image.fromarray(photo(64, 64)).save(good, format="PNG")
    huge = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + _png_chunk(b"IEND", b""))
    cases = {
        "notes.txt": (b"these are my notes, not an image\n", "not a readable image"),
        "fake.png": (b"<html>not a png</html>", "not a readable image"),
        "empty.png": (b"", "empty"),
        "truncated.png": (good.getvalue()[: len(good.getvalue()) // 2], "truncated"),
        "huge.png": (huge, "megapixels"),
    }
    out = {}
    for name, (data, phrase) in cases.items():
        (folder / name).write_bytes(data)
        out[name] = (folder / name, phrase)
    return out


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------

def call(client, path, chosen, mode="64", typed=""):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), chosen, typed, mode, api_name="/reconstruct")


def read_png(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG", f"{path} is {im.format}, not PNG"
        return np.asarray(im.convert("RGB"))


_models: dict = {}


def expected(path, checkpoint: Path, mode: str):
    """What the demo must show, computed directly with the library."""
    import vqexplore
    from vqexplore.data import load_image
    from vqexplore.reconstruct import prepare_image, reconstruct

    from vqexplore.metrics import LPIPS

    if checkpoint not in _models:
        _models[checkpoint] = vqexplore.load(checkpoint)
    if "lpips" not in _models:
        _models["lpips"] = LPIPS(weights_path=_lpips_file[0])
    prepared = prepare_image(load_image(path), mode)
    [r] = reconstruct(_models[checkpoint], [prepared], lpips=_models["lpips"])
    return prepared, r


def check_result(result, path, checkpoints: dict[str, Path], chosen: list[str], mode: str) -> None:
    model_input, gallery, table, notes = result
    assert len(gallery) == 3 * len(chosen)
    rows = table["data"]
    assert [row[0] for row in rows] == chosen
    for i, name in enumerate(chosen):
        prepared, r = expected(path, checkpoints[name], mode)
        assert np.array_equal(read_png(model_input), prepared)
        recon, error, tokens = (read_png(g["image"]) for g in gallery[3 * i: 3 * i + 3])
        assert name in gallery[3 * i]["caption"] and "PSNR" in gallery[3 * i]["caption"]
        assert np.array_equal(recon, r.reconstruction), f"{name}: reconstruction differs from the library's"
        assert np.array_equal(error, r.error_map)
        assert np.array_equal(tokens, r.token_map)
        row = dict(zip(table["headers"], rows[i]))
        assert row["tokens"] == r.num_tokens == (prepared.shape[0] // 4) * (prepared.shape[1] // 4)
        assert row["bits"] == pytest.approx(r.bits, abs=0.1)
        assert row["PSNR (dB)"] == pytest.approx(r.psnr, abs=0.01)
        assert row["SSIM"] == pytest.approx(r.ssim, abs=1e-4)
        # computed with the weights in the server's TORCH_HOME: the library's value, in the caption too
        assert r.lpips is not None and row["LPIPS"] == pytest.approx(r.lpips, abs=2e-4), (row, r.lpips)
        assert f"LPIPS {r.lpips:.3f}"[:-1] in gallery[3 * i]["caption"]
    assert "LPIPS not shown" not in notes, notes


# ------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------

def test_every_image_kind_round_trips_losslessly(server, client, tmp_path):
    _, checkpoints = server
    names = list(checkpoints)
    files = write_good_images(tmp_path)
    for i, (kind, path) in enumerate(files.items()):
        mode = "native" if kind in ("large.jpg", "odd.png", "rgb16.png") else "64"
        chosen = names if i % 3 == 0 else [names[i % 2]]
        check_result(call(client, path, chosen, mode), path, checkpoints, chosen, mode)
    # native mode respects the documented pixel budget and the multiple-of-4 rule
    from vqexplore.reconstruct import NATIVE_MAX_PIXELS

    model_input = read_png(call(client, files["large.jpg"], names[:1], "native")[0])
    h, w = model_input.shape[:2]
    assert h * w <= NATIVE_MAX_PIXELS and h % 4 == 0 and w % 4 == 0 and w > h
    assert read_png(call(client, files["odd.png"], names[:1], "native")[0]).shape == (64, 92, 3)


def test_bad_inputs_get_one_clear_error_and_the_server_keeps_serving(server, client, tmp_path):
    from gradio_client.exceptions import AppError

    _, checkpoints = server
    names = list(checkpoints)
    for name, (path, phrase) in write_bad_images(tmp_path).items():
        with pytest.raises(AppError) as info:
            call(client, path, names)
        message = str(info.value)
        assert phrase in message, f"{name}: {message}"
        assert "Traceback" not in message and len(message.splitlines()) == 1 and len(message) < 300, message
    problems = [
        (dict(chosen=[]), "No checkpoint chosen"),
        (dict(chosen=[], typed="nobody/does-not-exist"), "cannot download nobody/does-not-exist"),
        (dict(chosen=names, typed="/etc/passwd"), "not a Hub repo id"),
    ]
    good = tmp_path / "good.png"
    Image.fromarray(photo(80, 80)).save(good)
    for kwargs, phrase in problems:
        with pytest.raises(AppError, match=phrase):
            call(client, good, **kwargs)
    with pytest.raises(AppError, match="No image"):
        client.predict(None, names, "", "64", api_name="/reconstruct")
    # still serving, and correctly
    check_result(call(client, good, names), good, checkpoints, names, "64")


def test_twenty_concurrent_clients_all_get_their_own_correct_result(server, tmp_path):
    from gradio_client import Client

    url, checkpoints = server
    names = list(checkpoints)
    paths = []
    for i in range(20):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(photo(72 + 4 * i, 96, seed=100 + i)).save(paths[-1])
    clients = [Client(url, verbose=False, ssl_verify=False) for _ in range(20)]

    def one(i):
        chosen = [names[i % len(names)]]
        t = time.perf_counter()
        result = call(clients[i], paths[i], chosen)
        return i, chosen, result, time.perf_counter() - t

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        done = list(pool.map(one, range(20)))
    wall = time.perf_counter() - t0
    for i, chosen, result, _ in done:
        check_result(result, paths[i], checkpoints, chosen, "64")
    print(f"\n20 concurrent clients: {wall:.1f} s wall, slowest {max(d[3] for d in done):.1f} s")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium at /usr/bin/chromium")
def test_browser_upload_shows_reconstructions(server, tmp_path):
    from playwright.sync_api import expect

    url, checkpoints = server
    upload = tmp_path / "upload.png"
    Image.fromarray(photo(240, 320, seed=7)).save(upload)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "gradio_demo.png"
    with chromium() as browser:
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url, wait_until="networkidle", timeout=60_000)
            upload_to_demo(page, upload)
            run_demo(page, 3 * len(checkpoints), timeout_s=60)
            images = page.locator("#results img")
            for i in range(images.count()):
                expect(images.nth(i)).to_be_visible()
                assert images.nth(i).evaluate("img => img.complete && img.naturalWidth") == 64
            expect(page.locator("#numbers")).to_contain_text(next(iter(checkpoints)))
            expect(page.locator("#notes")).to_contain_text("LPIPS")
            assert page.locator(".toast-body.error").count() == 0
            page.screenshot(path=str(shot), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    shutil.copy(shot, tmp_path / shot.name)


def test_demo_set_from_the_environment_and_models_loaded_once(tmp_path, monkeypatch):
    """In process: the checkpoint list follows VQEXPLORE_CHECKPOINTS / VQEXPLORE_HUB_REPOS, and
    each model is loaded once however many requests ask for it at the same time."""
    import vqexplore
    from app import gradio_app

    checkpoints = make_checkpoints(tmp_path / "ckpts")
    (tmp_path / "ckpts" / "not-a-checkpoint").mkdir()
    monkeypatch.setenv("VQEXPLORE_CHECKPOINTS", str(tmp_path / "ckpts"))
    monkeypatch.setenv("VQEXPLORE_HUB_REPOS", " user/a-model , ,user/b-model")
    entries = gradio_app.demo_checkpoints()
    assert [e.name for e in entries] == sorted(checkpoints) + ["user/a-model", "user/b-model"]
    assert entries[0].source == str(checkpoints[entries[0].name])

    loads = []
    real_load = vqexplore.load
    monkeypatch.setattr(vqexplore, "load", lambda source, **kw: loads.append(source) or real_load(source, **kw))
    cache = gradio_app.ModelCache({str(p) for p in checkpoints.values()})
    source = str(checkpoints["tiny-vq"])
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        models = list(pool.map(lambda _: cache.get(source), range(16)))
    assert loads == [source] and all(m is models[0] for m in models)
    assert not models[0].training


def test_lpips_is_computed_with_its_weights_and_said_missing_without(tmp_path, monkeypatch):
    """In process: with the AlexNet weights in TORCH_HOME every row carries the library's LPIPS;
    without them (and no download host: the network is mocked as unreachable) every row's LPIPS
    is empty and the notes say which file is missing and where it goes."""
    from app import gradio_app
    import vqexplore
    from vqexplore.data import load_image
    from vqexplore.metrics import LPIPS
    from vqexplore.reconstruct import prepare_image, reconstruct

    monkeypatch.setattr("vqexplore.metrics.url_reachable", lambda url, timeout=3.0: False)  # offline
    checkpoints = make_checkpoints(tmp_path / "ckpts")
    entries = [gradio_app.Entry(name, str(path)) for name, path in checkpoints.items()]
    image = tmp_path / "photo.png"
    Image.fromarray(photo(64, 64, seed=4)).save(image)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    _, _, rows, notes = gradio_app.Demo(entries).run(str(image), list(checkpoints), "", "64")
    assert [row[-1] for row in rows] == [None] * len(checkpoints)
    assert f"LPIPS not shown: LPIPS needs {ALEXNET_FILE} in {tmp_path / 'empty-torch-home'}" in notes, notes

    weights = lpips_weights(tmp_path / "torch-home")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    _, _, rows, notes = gradio_app.Demo(entries).run(str(image), list(checkpoints), "", "64")
    assert "LPIPS not shown" not in notes, notes
    lpips = LPIPS(weights_path=weights)
    for row, path in zip(rows, checkpoints.values()):
        [r] = reconstruct(vqexplore.load(path), [prepare_image(load_image(image), "64")], lpips=lpips)
        assert row[-1] == pytest.approx(r.lpips, abs=1e-4) and r.lpips > 0
