"""The evaluation protocol (vqexplore.protocol): identity, images, evaluation, the on-disk cache, and one
checkpoint under one protocol reading the same usage, PSNR and SSIM on Compare, Codebook usage,
Reconstructions (the dashboard through AppTest), the Gradio demo (a real server through gradio_client) and
``python -m trainer eval`` (a subprocess), each in its own process or cache folder so none reads another's
result."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vqexplore import VQModel
from vqexplore.errors import ConfigError
from vqexplore.protocol import Protocol, cached_evaluation, evaluate_protocol

REPO = Path(__file__).resolve().parent.parent


def tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = VQModel(quantizer="vq", codebook_size=256, code_dim=8, hidden_dim=16, n_resblocks=1)
    with torch.no_grad():
        model.quantizer.embedding.normal_(0, 0.3)
    model.save_pretrained(folder)
    return folder


def test_protocol_is_a_stable_hashable_value():
    a, b = Protocol.heldout_photos(64), Protocol.heldout_photos(64)
    assert a == b and hash(a) == hash(b) and a.key == b.key and len({a, b}) == 1
    # the key is a pure function of the fields (no process salt): pinned, so a change is deliberate
    assert a.key == Protocol.from_dict(json.loads(json.dumps(a.as_dict()))).key
    assert a.key != Protocol.heldout_photos(32).key != Protocol.builtin(32).key
    assert a.data_key == Protocol.heldout_photos(64, metrics=("usage", "psnr", "ssim", "lpips")).data_key
    assert a.usage_key == Protocol.heldout_photos(32).usage_key  # usage at whole-image scales ignores the size
    line = a.describe()
    assert "held-out photos" in line and "64 px" in line and a.key in line and "\n" not in line
    assert "fixed crops" in Protocol.builtin().describe()
    assert Protocol.hf("user/data").source == "hf:user/data"


@pytest.mark.parametrize("kw, word", [
    (dict(size=30), "multiple of 4"), (dict(crop="crops"), "built-in photos only"), (dict(count=0), "count"),
    (dict(metrics=("usage", "fid")), "fid"), (dict(split="test"), "split"), (dict(usage_scales=(2,)), "usage"),
])
def test_bad_protocols_are_one_clear_error(kw, word):
    with pytest.raises(ConfigError, match=word):
        Protocol(**{"source": "photos", **kw})


def test_images_come_from_the_data_sources(tmp_path):
    photos = Protocol.heldout_photos(32).images()
    assert photos.shape == (8, 3, 32, 32) and photos.min() >= -1 and photos.max() <= 1
    from vqexplore.data import validation_batch

    assert torch.equal(Protocol.builtin(32, count=16).images(), validation_batch("builtin", n=16, size=32))
    from PIL import Image

    for split in ("train", "val"):  # ImageNet layout: the protocol measures on val/
        (tmp_path / split / "c").mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((40, 48, 3), i * 40, np.uint8)).save(tmp_path / split / "c" / f"{i}.png")
    folder = Protocol.folder(tmp_path, size=16, count=3)
    assert folder.images().shape == (3, 3, 16, 16) and len(folder.whole_images()) == 3
    assert folder.whole_images()[0].shape == (40, 48, 3)


def test_evaluation_numbers_bits_and_cache(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny")
    model = VQModel.from_pretrained(ckpt)
    p = Protocol.builtin(32, count=16)
    r = evaluate_protocol(model, p)
    m = r.metrics
    assert r.counts.shape == (256,) and int(r.counts.sum()) == m["usage_tokens"] == 16 * 64
    assert m["usage"] == pytest.approx((r.counts > 0).mean())
    assert m["bits_per_image_fixed"] == 64 * 8 and m["bits_per_pixel_fixed"] == pytest.approx(0.5)
    assert 0 < m["bits_per_pixel_entropy"] <= 0.5 and m["protocol_key"] == p.key
    cache = tmp_path / "cache"
    first = cached_evaluation(ckpt, model, p, cache=cache)
    again = cached_evaluation(ckpt, model, p, cache=cache)
    assert not first.from_cache and again.from_cache
    assert again.metrics["psnr"] == first.metrics["psnr"] == m["psnr"] and np.array_equal(again.counts, r.counts)
    # other weights, other entry
    with torch.no_grad():
        model.quantizer.embedding.mul_(1.5)
    model.save_pretrained(ckpt)
    assert not cached_evaluation(ckpt, model, p, cache=cache).from_cache


def test_usage_over_whole_images_is_reused_when_only_the_size_changes(tmp_path, monkeypatch):
    ckpt = tiny_checkpoint(tmp_path / "tiny")
    model = VQModel.from_pretrained(ckpt)
    cache = tmp_path / "cache"
    p64 = Protocol.heldout_photos(64, usage_scales=(64, 128))
    r64 = cached_evaluation(ckpt, model, p64, cache=cache)
    assert r64.metrics["usage_tokens"] > 8 * 256
    import vqexplore.protocol as protocol_module

    def no_scales(*a, **k):
        raise AssertionError("usage measured again")

    monkeypatch.setattr(protocol_module, "_scale_counts", no_scales)
    r32 = cached_evaluation(ckpt, model, Protocol.heldout_photos(32, usage_scales=(64, 128)), cache=cache)
    assert np.array_equal(r32.counts, r64.counts) and r32.metrics["psnr"] != r64.metrics["psnr"]


def test_trainer_eval_records_the_protocol_and_the_dashboard_reuses_it(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny")
    env = dict(os.environ, VQEXPLORE_CACHE_DIR=str(tmp_path / "cache-eval"))
    subprocess.run([sys.executable, "-m", "trainer", "eval", "--ckpt", str(ckpt), "--data", "builtin", "--size", "32",
                    "--max-images", "16"], check=True, env=env, cwd=REPO, capture_output=True, timeout=600)
    saved = json.loads((ckpt / "metrics.json").read_text())
    p = Protocol.builtin(32, count=16)
    assert Protocol.from_dict(saved["protocol"]).data_key == p.data_key
    assert saved["protocol_description"].startswith("built-in photos") and len(saved["code_counts"]) == 256
    assert "bits_per_pixel_entropy" in saved and len(saved["weights_sha256"]) == 64
    card = (ckpt / "README.md").read_text()
    assert saved["protocol_key"] in card
    # a fresh cache: the numbers come from metrics.json, not from measuring again
    model = VQModel.from_pretrained(ckpt)
    r = cached_evaluation(ckpt, model, p, cache=tmp_path / "cache-dash")
    assert r.from_cache and r.metrics["psnr"] == saved["psnr"] and r.metrics["protocol_key"] == p.key
    # weights changed after the evaluation: metrics.json no longer answers
    with torch.no_grad():
        model.quantizer.embedding.mul_(2)
    model.save_pretrained(ckpt)
    assert not cached_evaluation(ckpt, model, p, cache=tmp_path / "cache-dash2").from_cache


def test_trainer_eval_refuses_a_bad_protocol_in_one_line(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny")
    out = subprocess.run([sys.executable, "-m", "trainer", "eval", "--ckpt", str(ckpt), "--data", "photos",
                          "--crop", "crops"], env=dict(os.environ, VQEXPLORE_CACHE_DIR=str(tmp_path / "c")),
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "built-in photos only" in out.stderr and not (ckpt / "metrics.json").exists()


# ---------------------------------------------------------------------------------------------
# One checkpoint, one protocol, one usage / PSNR / SSIM on every view
# ---------------------------------------------------------------------------------------------

def _pct(text: str) -> float:
    return float(re.search(r"([\d.]+)%", text).group(1))


def test_one_checkpoint_reads_the_same_everywhere(tmp_path):
    """The default protocol (the held-out photos, usage over the photos whole at 64-512 px) on a fresh
    checkpoint; every view measures in its own cache folder (or process), none reads metrics.json."""
    from streamlit.testing.v1 import AppTest

    from helpers.dashboard import APP, open_page
    from helpers.servers import start_demo, stop

    ckpts, runs = tmp_path / "ckpts", tmp_path / "runs"
    runs.mkdir()
    ckpt = tiny_checkpoint(ckpts / "tiny-vq")
    protocol = Protocol.heldout_photos(64)

    # trainer eval, its own process and cache; --out keeps metrics.json out of the checkpoint folder
    out = tmp_path / "eval.json"
    subprocess.run([sys.executable, "-m", "trainer", "eval", "--ckpt", str(ckpt), "--data", "photos", "--size", "64",
                    "--out", str(out)], check=True, cwd=REPO, capture_output=True, timeout=900,
                   env=dict(os.environ, VQEXPLORE_CACHE_DIR=str(tmp_path / "cache-eval")))
    ev = json.loads(out.read_text())
    assert Protocol.from_dict(ev["protocol"]).data_key == protocol.data_key
    truth = {"usage": 100 * ev["usage"], "psnr": ev["psnr"], "ssim": ev["ssim"]}
    assert 0 < truth["usage"] < 100

    # the dashboard (AppTest), its own cache
    from helpers.dashboard import dashboard_env

    with dashboard_env({"checkpoints": ckpts, "runs": runs, "cache": tmp_path / "cache-dash"}):
        at = AppTest.from_file(str(APP), default_timeout=600)
        at.run()
        assert not at.exception and not at.error, ([e.value for e in at.exception], [e.value for e in at.error])
        assert any(protocol.key in c.value for c in at.caption), "the page header states the protocol"
        row = at.dataframe[0].value.iloc[0]
        compare = {"usage": row["usage %"], "psnr": row["PSNR"], "ssim": row["SSIM"]}
        open_page(at, "codebook_usage")
        assert not at.exception and not at.error
        usage_page = {"usage": _pct(next(m.value for m in at.metric if m.label == "Codebook usage"))}
        open_page(at, "reconstructions")
        assert not at.exception and not at.error
        header = next(m.value for m in at.markdown if m.value.startswith("**tiny-vq**"))
        recon = {"usage": _pct(header), "psnr": float(re.search(r"PSNR ([\d.]+) dB", header).group(1)),
                 "ssim": float(re.search(r"SSIM ([\d.]+)", header).group(1))}

    # the Gradio demo: a real server, its own cache, through its API
    from gradio_client import Client

    proc, url, log = start_demo(tmp_path, ckpts, VQEXPLORE_CACHE_DIR=str(tmp_path / "cache-demo"))
    try:
        table, note = Client(url, verbose=False, ssl_verify=False).predict(api_name="/protocol")
    finally:
        stop(proc)
    assert protocol.key in note, note
    [demo_row] = [r for r in table["data"] if r[0] == "tiny-vq"]
    demo = {"usage": float(demo_row[1]), "psnr": float(demo_row[2]), "ssim": float(demo_row[3])}

    # each view at its own display precision
    for name, got, digits in (("Compare", compare, {"usage": 4, "psnr": 4, "ssim": 4}),
                              ("Codebook usage", usage_page, {"usage": 1}),
                              ("Reconstructions", recon, {"usage": 1, "psnr": 2, "ssim": 3}),
                              ("demo", demo, {"usage": 2, "psnr": 2, "ssim": 4})):
        for key, d in digits.items():
            assert round(got[key], d) == round(truth[key], d), (name, key, got[key], truth[key])
