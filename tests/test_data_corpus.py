"""vqexplore.data.corpus: the shipped photo corpus (source "photos"), its credits, its re-creation
script's selection, the whole-photo split and the random-scale crops (PIL and batched roi_align).

Reads the real shipped files; nothing is downloaded.
"""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqexplore import DataError
from vqexplore import data as D
from vqexplore.data.corpus import crop_boxes

ROOT = Path(__file__).resolve().parent.parent


def shipped() -> list[Path]:
    return sorted(D.PHOTOS_DIR.glob("*.jpg"))


def credits() -> list[dict]:
    with open(D.PHOTOS_DIR / "credits.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def make_photos_script():
    spec = importlib.util.spec_from_file_location("make_photos", ROOT / "scripts" / "make_photos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_corpus_files_are_small_colour_photos_shorter_side_512():
    files = shipped()
    assert len(files) == 23
    total = sum(f.stat().st_size for f in files)
    assert total < 10e6, f"{total / 1e6:.1f} MB"
    for f in files:
        with Image.open(f) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert min(im.size) == 512, (f.name, im.size)
    names = D.photo_names()
    assert len(names) == 31 and len(set(names)) == 31   # 23 shipped + 8 built-in
    for name, a in D.photo_arrays(None):
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and min(a.shape[:2]) >= 300
        assert not a.flags.writeable
        assert float(np.abs(a[..., 0].astype(int) - a[..., 2]).mean()) > 1 or name == "kde-grey" \
            or name == "kde-cold-ripple"   # colour, except the two black-and-white photographs
    assert "23 train / 8 val photos" in D.describe_source("photos")


def test_credits_cover_every_file_with_origin_author_and_licence():
    rows = credits()
    assert [r["file"] for r in rows] == [f.name for f in shipped()]
    for r in rows:
        assert r["package"] in ("mate-backgrounds", "plasma-workspace-wallpapers"), r
        assert r["version"] and r["original"].startswith("/usr/share/") and r["title"], r
        assert r["author"].strip() and "<" not in r["author"], r
        assert r["licence"] in ("GPL-2.0-or-later", "LGPL-3.0"), r


def test_script_selection_matches_the_shipped_files_and_credits():
    script = make_photos_script()
    selection = script.SELECTION
    assert sorted(n for n, _, _ in selection) == [f.name for f in shipped()]
    by_file = {r["file"]: r for r in credits()}
    for name, package, original in selection:
        assert by_file[name]["package"] == package and by_file[name]["original"] == "/" + original
        assert by_file[name]["version"] == script.PACKAGES[package]
    # only the packages the issue allows (and never a lomiri-* one)
    assert set(script.PACKAGES) <= {"mate-backgrounds", "plasma-workspace-wallpapers", "ukui-wallpapers"}
    assert script.SHORT_SIDE == 512


def test_script_reads_authors_from_a_dep5_copyright_file(tmp_path):
    script = make_photos_script()
    doc = tmp_path / "usr/share/doc/mate-backgrounds"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: 2001, Someone Else\nLicense: GPL-2+\n\n"
        "Files: nature/Aqua.jpg\n       nature/Garden.jpg\n"
        "Copyright: 2008, Charles Barbin <barbinch@free.fr>\n           2009, Second Person\nLicense: GPL-2+\n",
        encoding="utf-8")
    author, licence = script.mate_credit(tmp_path, "usr/share/backgrounds/mate/nature/Garden.jpg")
    assert (author, licence) == ("Charles Barbin, Second Person", "GPL-2.0-or-later")
    assert script.mate_credit(tmp_path, "usr/share/backgrounds/mate/nature/Other.jpg")[0] == "Someone Else"


def test_split_is_by_whole_photo_and_val_is_the_demo_view():
    train, val = D.photo_names("train"), D.photo_names("val")
    assert set(train).isdisjoint(val) and sorted(train + val) == sorted(D.photo_names())
    assert tuple(val) == tuple(sorted(v for v in D.PHOTOS_VAL if v not in D.BUILTIN_VAL_PHOTOS)) \
        + D.BUILTIN_VAL_PHOTOS
    assert len(val) == 8 and len(train) == 23
    ds_val = D.make_dataset("photos", "val", 64)
    assert len(ds_val) == 8
    arrays = dict(D.photo_arrays("val"))
    for i, name in enumerate(val):   # the whole photo, shorter side resized to 64, centre crop
        assert torch.equal(ds_val[i], D.image_to_tensor(D.center_crop(arrays[name], 64)))
        assert torch.equal(ds_val[(7, i)], ds_val[i])   # epoch and seed do not matter
    ds_train = D.make_dataset("photos", "train", 64)
    assert ds_train.names == tuple(train)   # crops are only ever cut from training photos
    photos = {ds_train.crop_params((0, i))[0] for i in range(400)}
    assert photos == set(range(len(train)))


def test_random_scale_crops_cover_pixels_to_whole_photo_and_are_deterministic():
    ds = D.PhotoCorpus("train", size=48, seed=3)
    x = ds[(0, 5)]
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.std()) > 0
    assert torch.equal(x, D.PhotoCorpus("train", size=48, seed=3)[(0, 5)])   # pure function of the key
    ds.set_epoch(0)
    assert torch.equal(ds[5], x)
    assert not torch.equal(x, D.PhotoCorpus("train", size=48, seed=4)[(0, 5)])
    assert not torch.equal(x, ds[(1, 5)])
    shapes = np.array([a.shape[:2] for _, a in D.photo_arrays("train")])
    b = crop_boxes(np.random.default_rng(0), shapes, 20_000, 64)
    short = shapes.min(1)[b["photo"]]
    assert (b["side"] >= 64 - 1e-9).all() and (b["side"] <= short + 1e-9).all()
    assert (b["x0"] >= 0).all() and (b["x0"] + b["side"] <= shapes[b["photo"], 1] + 1e-9).all()
    assert (b["y0"] >= 0).all() and (b["y0"] + b["side"] <= shapes[b["photo"], 0] + 1e-9).all()
    rel = np.log(b["side"] / 64) / np.log(short / 64)   # 0 = native pixels, 1 = the whole short side
    assert rel.min() < 0.01 and rel.max() > 0.99
    assert abs(float(np.mean(rel < 0.5)) - 0.5) < 0.02    # log-uniform: every octave equally often
    assert 0.48 < float(b["flip"].mean()) < 0.52
    assert sorted(set(b["photo"])) == list(range(len(shapes)))


def test_photo_stack_crops_match_pil_and_are_deterministic():
    rng = np.random.default_rng(1)
    photos = [rng.integers(0, 256, (40 + 8 * k, 56, 3), dtype=np.uint8) for k in range(3)]
    stack = D.PhotoStack(photos)
    assert stack.images.shape == (3, 3, 56, 56)
    a = stack.crops(64, 16, np.random.default_rng(7))
    assert a.shape == (64, 3, 16, 16) and a.dtype == torch.float32
    assert -1.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert torch.equal(a, stack.crops(64, 16, np.random.default_rng(7)))
    assert not torch.equal(a, stack.crops(64, 16, np.random.default_rng(8)))
    # the same boxes through PIL (the CPU dataset's resize): close on real photo content (centre
    # crops of four training photos, small so that roi_align stays fast on a CPU)
    real = [D.center_crop(a, 160) for _, a in D.photo_arrays("train")[:4]]
    stack = D.PhotoStack(real)
    got = stack.crops(12, 32, np.random.default_rng(2))
    b = crop_boxes(np.random.default_rng(2), stack.shapes, 12, 32)
    for k in range(12):
        x0, y0, s = b["x0"][k], b["y0"][k], b["side"][k]
        ref = np.asarray(Image.fromarray(real[b["photo"][k]]).resize(
            (32, 32), Image.Resampling.BICUBIC, box=(x0, y0, x0 + s, y0 + s)))
        if b["flip"][k]:
            ref = ref[:, ::-1]
        diff = (got[k] - D.image_to_tensor(np.ascontiguousarray(ref))).abs().mean() * 127.5
        assert float(diff) < 4.0, (k, float(diff))


def test_photo_stack_one_to_one_box_returns_the_pixels():
    img = np.random.default_rng(3).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    stack = D.PhotoStack([img])
    from torchvision.ops import roi_align

    box = torch.tensor([[0, 4.0, 2.0, 12.0, 10.0]])   # 8 x 8 pixels at (4, 2) -> an 8 x 8 output
    out = roi_align(stack.images, box, output_size=8, spatial_scale=1.0, sampling_ratio=1, aligned=True)
    assert torch.allclose(out[0], D.image_to_tensor(img[2:10, 4:12]), atol=1e-6)
    with pytest.raises(DataError, match="at least one photo"):
        D.PhotoStack([])


def test_config_accepts_the_photos_source():
    from trainer.config import load_config

    cfg = load_config(ROOT / "configs" / "cpu" / "default.yaml", ["data.train=photos", "data.val=photos"])
    assert cfg.data.train == "photos" and cfg.data.val == "photos"
    assert "photos" in D.NAMED_SOURCES
