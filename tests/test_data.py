"""vqexplore.data: decoding, built-in photos, datasets of every source kind, loaders, determinism.

Every file is made here with PIL / numpy / datasets in tmp_path; nothing is downloaded.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from vqexplore import DataError, ImageError
from vqexplore import data as D


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def gradient(w=48, h=32) -> np.ndarray:
    """A smooth colour image (lossy codecs keep it close)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 90)], -1).astype(np.uint8)


def noise(w=64, h=64, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_with_declared_size(w: int, h: int) -> bytes:
    """A PNG whose header declares w x h but holds almost no pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


def close(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    return a.shape == b.shape and float(np.abs(a.astype(int) - b.astype(int)).mean()) <= tol


# ----------------------------------------------------------------------------------------------
# load_image: every mode
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,ext,tol", [("JPEG", "jpg", 4.0), ("PNG", "png", 0.0), ("WEBP", "webp", 4.0)])
def test_load_image_formats_and_source_kinds(tmp_path, fmt, ext, tol):
    img = gradient()
    path = tmp_path / f"x.{ext}"
    Image.fromarray(img).save(path, fmt, quality=95)
    raw = path.read_bytes()
    for source in (path, str(path), raw, bytearray(raw), io.BytesIO(raw), Image.open(path)):
        out = D.load_image(source)
        assert out.dtype == np.uint8 and out.shape == (32, 48, 3)
        assert close(out, img, tol), type(source)
    with open(path, "rb") as f:  # an open binary file, read from its current position or not
        f.read(10)
        assert close(D.load_image(f), img, tol)


def test_load_image_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 300, 32768, 65535]], dtype=np.uint16)
    im = Image.fromarray(values)
    assert im.mode == "I;16"
    im.save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode in ("I;16", "I")
    out = D.load_image(tmp_path / "g16.png")
    assert out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    # a 32-bit "I" image with 16-bit values, and a uint16 array: same scaling
    assert D.load_image(Image.fromarray(values.astype(np.int32)))[0, :, 0].tolist() == [0, 1, 128, 255]
    assert D.load_image(values)[0, :, 0].tolist() == [0, 1, 128, 255]


def test_load_image_grayscale_and_alpha_modes(tmp_path):
    gray = np.arange(0, 256, 16, dtype=np.uint8).reshape(4, 4)
    Image.fromarray(gray, "L").save(tmp_path / "l.png")
    out = D.load_image(tmp_path / "l.png")
    assert out.shape == (4, 4, 3) and (out == gray[..., None]).all()

    la = Image.new("LA", (4, 2), (100, 255))
    la.putpixel((0, 0), (100, 0))      # fully transparent -> white
    la.save(tmp_path / "la.png")
    out = D.load_image(tmp_path / "la.png")
    assert out[0, 0].tolist() == [255, 255, 255] and out[1, 1].tolist() == [100, 100, 100]

    rgba = Image.new("RGBA", (3, 1), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (255, 0, 0, 0))
    rgba.putpixel((2, 0), (0, 0, 0, 128))  # half black over white -> mid gray
    rgba.save(tmp_path / "rgba.png")
    out = D.load_image(tmp_path / "rgba.png")
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 1].tolist() == [255, 255, 255]
    assert all(abs(v - 127) <= 1 for v in out[0, 2].tolist())


def test_load_image_palette_with_transparency(tmp_path):
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 255, 0] + [255, 0, 0] + [0, 0, 0] * 254)
    p.putpixel((0, 0), 0)
    p.save(tmp_path / "p.png", transparency=0)
    out = D.load_image(tmp_path / "p.png")
    assert out[0, 0].tolist() == [255, 255, 255]     # transparent index -> white, not green
    assert out[2, 2].tolist() == [255, 0, 0]
    p.save(tmp_path / "p.gif", transparency=0)
    assert D.load_image(tmp_path / "p.gif")[0, 0].tolist() == [255, 255, 255]
    q = Image.new("P", (2, 2), 1)
    q.putpalette([0, 255, 0] + [0, 0, 255] + [0, 0, 0] * 254)
    assert D.load_image(q)[0, 0].tolist() == [0, 0, 255]  # no transparency: plain palette lookup


def test_load_image_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", "JPEG", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    out = D.load_image(tmp_path / "cmyk.jpg")
    assert out.shape == (16, 16, 3)
    r, g, b = out.reshape(-1, 3).mean(0)
    assert r > 240 and g < 15 and b < 15


def test_load_image_applies_exif_orientation(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = (255, 0, 0)   # left half red
    img[:, 20:] = (0, 0, 255)   # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6            # "rotate 90 degrees clockwise to display"
    Image.fromarray(img).save(tmp_path / "rot.jpg", quality=95, exif=exif.tobytes())
    out = D.load_image(tmp_path / "rot.jpg")
    assert out.shape == (40, 20, 3)            # displayed portrait
    assert out[:15].reshape(-1, 3).mean(0)[0] > 200   # the left (red) edge is now on top
    assert out[-15:].reshape(-1, 3).mean(0)[2] > 200


def test_load_image_numpy_arrays():
    rgb = gradient(8, 6)
    out = D.load_image(rgb)
    assert (out == rgb).all() and out is not rgb
    assert (D.load_image(rgb[..., 0])[..., 2] == rgb[..., 0]).all()
    assert (D.load_image(rgb[..., :1])[..., 1] == rgb[..., 0]).all()
    assert (D.load_image(rgb.astype(np.float32) / 255) == rgb).all()
    rgba = np.concatenate([rgb, np.full((6, 8, 1), 255, np.uint8)], -1)
    rgba[0, 0, 3] = 0
    out = D.load_image(rgba)
    assert out[0, 0].tolist() == [255, 255, 255] and (out[1:] == rgb[1:]).all()
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        D.load_image(rgb.astype(np.float32))          # 0..255 floats: ambiguous, refused
    with pytest.raises(ImageError, match="shape"):
        D.load_image(np.zeros((3, 8, 8), np.uint8))   # CHW is not guessed


# ----------------------------------------------------------------------------------------------
# load_image: bad inputs
# ----------------------------------------------------------------------------------------------

def test_load_image_bad_files_raise_one_clear_sentence(tmp_path):
    (tmp_path / "upload.png").write_bytes(os.urandom(2000))
    with pytest.raises(ImageError,
                       match=r"^upload\.png is not a readable image \(unrecognised format\); upload a JPEG"):
        D.load_image(tmp_path / "upload.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.jpg is not a readable image \(empty file\)"):
        D.load_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageError, match="empty file"):
        D.load_image(b"")
    with pytest.raises(ImageError, match="does not exist"):
        D.load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="folder"):
        D.load_image(tmp_path)
    # EPS would be rendered by Ghostscript: never opened
    with pytest.raises(ImageError, match="unrecognised format"):
        D.load_image(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ImageError, match="cannot use a int; pass a path"):
        D.load_image(12)
    with pytest.raises(ImageError, match="tensor_to_image"):
        D.load_image(torch.zeros(3, 4, 4))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_load_image_truncated(tmp_path, fmt):
    buf = io.BytesIO()
    Image.fromarray(noise(96, 96)).save(buf, fmt)
    cut = buf.getvalue()[: len(buf.getvalue()) // 2]
    (tmp_path / "upload.img").write_bytes(cut)
    with pytest.raises(ImageError, match=r"upload\.img is not a readable image \(truncated"):
        D.load_image(tmp_path / "upload.img")
    stream = io.BytesIO(cut)
    stream.name = "photo.jpg"
    with pytest.raises(ImageError, match=r"^photo\.jpg .*truncated"):
        D.load_image(stream)


def test_load_image_size_limits_without_touching_pil_globals(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    (tmp_path / "big.png").write_bytes(png_with_declared_size(7000, 7000))   # 49 MP > 40 MP
    with pytest.raises(ImageError,
                       match=r"big\.png is 7000x7000 pixels \(49\.0 megapixels\), more than the limit of 40\.0"):
        D.load_image(tmp_path / "big.png")
    (tmp_path / "bomb.png").write_bytes(png_with_declared_size(100_000, 100_000))  # PIL's own bomb error
    with pytest.raises(ImageError, match=r"bomb\.png declares 10000\.0 megapixels.*decompression bomb"):
        D.load_image(tmp_path / "bomb.png")
    with pytest.raises(ImageError, match="more than the limit"):
        D.load_image(gradient(48, 32), max_pixels=1000)
    assert D.load_image(gradient(48, 32), max_pixels=48 * 32).shape == (32, 48, 3)
    assert Image.MAX_IMAGE_PIXELS == before


# ----------------------------------------------------------------------------------------------
# tensors, crops
# ----------------------------------------------------------------------------------------------

def test_tensor_round_trip_and_shapes():
    img = noise(12, 8)
    t = D.image_to_tensor(img)
    assert t.shape == (3, 8, 12) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    assert (D.tensor_to_image(t) == img).all()
    assert (D.tensor_to_image(t[None]) == img).all()
    assert (D.tensor_to_image(torch.full((3, 2, 2), 5.0)) == 255).all()   # clamped
    with pytest.raises(ImageError, match="shape"):
        D.tensor_to_image(torch.zeros(2, 3, 4, 4))


def test_center_crop_and_fit_to_multiple():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 50:150] = 255                      # the centre square is white
    out = D.center_crop(img, 64)
    assert out.shape == (64, 64, 3) and out.mean() > 250
    assert D.center_crop(gradient(30, 50), 16).shape == (16, 16, 3)

    assert D.fit_to_multiple(gradient(103, 77)).shape == (76, 100, 3)
    big = D.fit_to_multiple(gradient(2000, 1000), max_pixels=100_000)
    h, w = big.shape[:2]
    assert h % 4 == 0 and w % 4 == 0 and h * w <= 100_000 and abs(w / h - 2) < 0.1
    assert D.fit_to_multiple(gradient(50, 30), multiple=8).shape == (24, 48, 3)
    with pytest.raises(ImageError, match="smaller"):
        D.fit_to_multiple(gradient(3, 3))


# ----------------------------------------------------------------------------------------------
# built-in photos
# ----------------------------------------------------------------------------------------------

def test_builtin_photos_are_colour_and_split_by_photo():
    photos = D.builtin_photos()
    names = [n for n, _ in photos]
    assert len(photos) >= 8 and len(set(names)) == len(names)
    for name, a in photos:
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and min(a.shape[:2]) >= 256, name
        chroma = np.abs(a[..., 0].astype(int) - a[..., 2].astype(int)).mean()
        assert chroma > 5, f"{name} looks grayscale"
    train = {n for n, _ in D.builtin_photos("train")}
    val = {n for n, _ in D.builtin_photos("val")}
    assert train and val and not train & val and train | val == set(names)
    assert D.BuiltinPhotos("train").names == D.BUILTIN_TRAIN_PHOTOS
    vds = D.BuiltinPhotos("val")
    assert set(vds.names) == val == set(D.BUILTIN_VAL_PHOTOS)
    val_arrays = [a for _, a in D.builtin_photos("val")]
    assert all((np.asarray(im) == a).all() for im, a in zip(vds._images(), val_arrays))
    assert "6 train / 2 val photos" in D.describe_source("builtin")


def test_builtin_items_and_determinism():
    ds = D.BuiltinPhotos("train", size=64, seed=0)
    assert len(ds) == D.BuiltinPhotos.TRAIN_LENGTH
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's warning about read-only numpy arrays
        x = ds[3]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    torch.manual_seed(123)
    np.random.seed(123)
    assert torch.equal(ds[3], D.BuiltinPhotos("train", seed=0)[3])      # global RNGs play no part
    assert torch.equal(ds[(0, 3)], x)
    assert not torch.equal(ds[(1, 3)], x)                                 # another epoch
    assert not torch.equal(D.BuiltinPhotos("train", seed=1)[3], x)        # another seed
    ds.set_epoch(1)
    assert torch.equal(ds[3], ds[(1, 3)])
    # crops cover a meaningful part of the photo at varied scales, never upsampled much
    sides = [ds.crop_params((0, i))[3] for i in range(200)]
    assert 60 < min(sides) and max(sides) > 150
    assert len({ds.crop_params((0, i))[0] for i in range(200)}) == len(D.BUILTIN_TRAIN_PHOTOS)
    # val: fixed, independent of seed and epoch; validation_batch = its first n items
    v = D.BuiltinPhotos("val")
    assert len(v) == D.BuiltinPhotos.VAL_LENGTH
    assert torch.equal(v[5], D.BuiltinPhotos("val", seed=7)[(3, 5)])
    vb = D.validation_batch("builtin", n=8, size=32)
    assert vb.shape == (8, 3, 32, 32)
    assert torch.equal(vb[7], D.BuiltinPhotos("val", size=32)[7])
    assert len(D.make_dataset("builtin", "val", 32)) == 256


def test_loader_order_workers_resume_and_distributed():
    ds = D.BuiltinPhotos("train", size=16, length=24, seed=3)

    def epochs(loader, n_epochs):
        out = []
        for e in range(n_epochs):
            if e:
                loader.sampler.set_epoch(e)
            out.append(torch.cat(list(loader)))
        return out

    single = epochs(D.make_loader(ds, 8, shuffle=True, seed=5), 2)
    assert single[0].shape == (24, 3, 16, 16) and single[0].dtype == torch.float32
    assert not torch.equal(single[0], single[1])
    # workers (persistent: the epoch reaches them through the sampler's keys) give the same data
    multi = epochs(D.make_loader(ds, 8, shuffle=True, seed=5, num_workers=2), 2)
    assert all(torch.equal(a, b) for a, b in zip(single, multi))
    # the order is a pure function of (seed, epoch)
    s1 = D.make_loader(ds, 8, shuffle=True, seed=5, epoch=1).sampler
    assert s1.order() == D.make_loader(ds, 8, shuffle=True, seed=5, epoch=1).sampler.order()
    assert s1.order() != D.make_loader(ds, 8, shuffle=True, seed=6, epoch=1).sampler.order()
    assert sorted(s1.order()) == list(range(24))
    assert D.make_loader(ds, 8, shuffle=False).sampler.order() == list(range(24))
    # mid-epoch resume: skip two batches without decoding them, get exactly the rest
    resumed = D.make_loader(ds, 8, shuffle=True, seed=5, epoch=1, start_batch=2)
    assert len(resumed) == 1 and torch.equal(torch.cat(list(resumed)), single[1][16:])
    stream = D.iter_batches(D.make_loader(ds, 8, shuffle=True, seed=5), start_step=2)
    assert torch.equal(next(stream), single[0][16:]) and torch.equal(next(stream), single[1][:8])
    # distributed: ranks partition the epoch
    r0 = D.make_loader(ds, 4, shuffle=True, seed=5, distributed=True, num_replicas=2, rank=0).sampler
    r1 = D.make_loader(ds, 4, shuffle=True, seed=5, distributed=True, num_replicas=2, rank=1).sampler
    assert isinstance(r0, torch.utils.data.DistributedSampler)
    keys = list(r0) + list(r1)
    assert sorted(i for _, i in keys) == list(range(24)) and len(r0) == 12


# ----------------------------------------------------------------------------------------------
# image folders
# ----------------------------------------------------------------------------------------------

def write_jpeg(path, w=80, h=60, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noise(w, h, seed)).save(path, quality=90)


def test_imagenet_layout_folder(tmp_path):
    for split, n in (("train", 6), ("val", 2)):
        for c in ("n01", "n02"):
            for i in range(n):
                write_jpeg(tmp_path / split / c / f"{c}_{i}.JPEG", seed=hash((split, c, i)) % 1000)
    train = D.make_dataset(tmp_path, "train", 32)
    val = D.make_dataset(str(tmp_path), "val", 32, in_memory=False)
    assert len(train) == 12 and len(val) == 4 and not val.in_memory
    x = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(train[(2, 5)], train[(2, 5)]) and not torch.equal(train[(0, 5)], train[(1, 5)])
    # val = shorter side resized + centre crop, exactly
    expected = D.image_to_tensor(D.center_crop(D.load_image(val.path(1)), 32))
    assert torch.equal(val[1], expected)
    # in memory and per-item decoding agree
    val_mem = D.make_dataset(tmp_path, "val", 32, in_memory=True)
    assert val_mem.in_memory and all(torch.equal(val[i], val_mem[i]) for i in range(4))
    train_disk = D.make_dataset(tmp_path, "train", 32, in_memory=False)
    assert torch.equal(train_disk[(4, 7)], train[(4, 7)])
    assert "ImageNet layout: 12 train / 4 val images" in D.describe_source(tmp_path)
    vb = D.validation_batch(str(tmp_path), n=3, size=32)
    assert vb.shape == (3, 3, 32, 32) and all(torch.equal(vb[i], val[i]) for i in range(3))
    (tmp_path / "val").rename(tmp_path / "validation")     # the other common name
    assert len(D.make_dataset(tmp_path, "val", 32)) == 4


def test_flat_folder_hash_split_and_bad_files(tmp_path):
    for i in range(30):
        write_jpeg(tmp_path / "photos" / f"sub{i % 3}" / f"img_{i}.jpg", 50, 70, seed=i)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    (tmp_path / "photos" / ".hidden.jpg").write_bytes(b"junk")
    root = tmp_path / "photos"
    train = D.make_dataset(root, "train", 24)
    val = D.make_dataset(root, "val", 24)
    tr, va = {bytes(f) for f in train.files}, {bytes(f) for f in val.files}
    assert len(va) >= 1 and not tr & va and len(tr | va) == 30
    assert {bytes(f) for f in D.make_dataset(root, "val", 24).files} == va   # stable
    assert train[0].shape == (3, 24, 24)
    assert "val by path hash" in D.describe_source(root)
    # a corrupt file names itself when it is read
    bad = tmp_path / "bad"
    write_jpeg(bad / "a.jpg")
    write_jpeg(bad / "b.jpg", seed=1)
    (bad / "c.jpg").write_bytes(b"this is not a jpeg")
    ds = D.make_dataset(bad, "train", 16, in_memory=False)
    with pytest.raises(DataError, match=r"c\.jpg is not a readable image"):
        [ds[i] for i in range(len(ds))]


def test_bad_sources_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="does-not-exist.*does not exist"):
        D.make_dataset(tmp_path / "does-not-exist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty holds no images"):
        D.make_dataset(tmp_path / "empty")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="holds no images"):
        D.make_dataset(tmp_path / "texts", "val")
    (tmp_path / "file.csv").write_text("a,b")
    with pytest.raises(DataError, match="file.csv"):
        D.make_dataset(tmp_path / "file.csv")
    with pytest.raises(DataError, match="unknown split"):
        D.make_dataset("builtin", "test")
    (tmp_path / "only_train" / "train" / "c").mkdir(parents=True)
    write_jpeg(tmp_path / "only_train" / "train" / "c" / "a.jpg")
    with pytest.raises(DataError, match="no val/ folder"):
        D.make_dataset(tmp_path / "only_train", "val")


# ----------------------------------------------------------------------------------------------
# Downsampled ImageNet
# ----------------------------------------------------------------------------------------------

def rows(images: np.ndarray) -> np.ndarray:
    """(N, s, s, 3) uint8 -> (N, 3*s*s) rows of R, G, B planes, as in the official files."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def imagenet64_images(n, seed, s=64):
    return np.random.default_rng(seed).integers(0, 256, (n, s, s, 3), dtype=np.uint8)


def check_imagenet64(root, batches, val_images, **kw):
    val = D.make_dataset(root, "val", 64, **kw)
    assert len(val) == len(val_images)
    for i in (0, len(val_images) - 1):
        assert torch.equal(val[i], D.image_to_tensor(val_images[i]))
    train = D.make_dataset(root, "train", 64, **kw)
    all_train = np.concatenate(batches)
    assert len(train) == len(all_train)
    for i in range(len(all_train)):   # batch files in numeric order; train = random flips only
        x = D.tensor_to_image(train[(0, i)])
        assert (x == all_train[i]).all() or (x == all_train[i][:, ::-1]).all()
    flips = sum(not (D.tensor_to_image(train[(0, i)]) == all_train[i]).all() for i in range(len(all_train)))
    assert 0 < flips < len(all_train)
    assert D.make_dataset(root, "val", 32, **kw)[0].shape == (3, 32, 32)


def test_downsampled_imagenet_npz(tmp_path, monkeypatch):
    monkeypatch.setenv("VQEXPLORE_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "imagenet64"
    root.mkdir()
    batches = [imagenet64_images(n, seed) for n, seed in ((5, 1), (3, 2), (4, 10))]
    for b, k in zip(batches, (1, 2, 10)):
        np.savez(root / f"train_data_batch_{k}.npz", data=rows(b), labels=np.arange(len(b)) + 1,
                 mean=rows(b).mean(0))
    val_images = imagenet64_images(6, 99)
    (root / "Imagenet64_val").mkdir()
    np.savez_compressed(root / "Imagenet64_val" / "val_data.npz", data=rows(val_images), labels=np.ones(6, int))
    check_imagenet64(root, batches, val_images, in_memory=True)
    check_imagenet64(root, batches, val_images, in_memory=False)     # mapped in place / converted
    mapped = D.make_dataset(root, "train", in_memory=False)
    assert not mapped.in_memory
    clone = pickle.loads(pickle.dumps(mapped))    # spawn-started workers: maps reopen, pages not copied
    assert clone._arrays is None and torch.equal(clone[(2, 11)], mapped[(2, 11)])
    converted = sorted((tmp_path / "cache").rglob("*.npy"))      # every file converted once, then mapped
    assert len(converted) == 4
    stamps = [f.stat().st_mtime_ns for f in converted]
    D.make_dataset(root, "train", in_memory=False)
    D.make_dataset(root, "val", in_memory=False)
    assert sorted((tmp_path / "cache").rglob("*.npy")) == converted
    assert [f.stat().st_mtime_ns for f in converted] == stamps    # not converted again
    single = D.make_dataset(root / "train_data_batch_2.npz", "val")   # one file: used for any split
    assert len(single) == 3
    assert "3 train batch files, val_data" in D.describe_source(root)
    np.savez(tmp_path / "val_data.npz", data=np.zeros((2, 96), np.uint8))  # 96 = 3 * 32, 32 not a square
    with pytest.raises(DataError, match="3 \\* s \\* s"):
        D.make_dataset(tmp_path / "val_data.npz", "val")


def test_downsampled_imagenet_pickle_and_restricted_unpickler(tmp_path, monkeypatch):
    monkeypatch.setenv("VQEXPLORE_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "pickled"
    root.mkdir()
    batches = [imagenet64_images(4, 3), imagenet64_images(2, 4)]
    for k, b in enumerate(batches, 1):
        with open(root / f"train_data_batch_{k}", "wb") as f:   # protocol 2, like the 2017 files
            pickle.dump({"data": rows(b), "labels": list(range(1, len(b) + 1)), "mean": rows(b).mean(0)}, f, protocol=2)
    val_images = imagenet64_images(3, 5)
    with open(root / "val_data", "wb") as f:
        pickle.dump({"data": rows(val_images), "labels": [1, 2, 3]}, f, protocol=pickle.HIGHEST_PROTOCOL)
    check_imagenet64(root, batches, val_images, in_memory=True)
    check_imagenet64(root, batches, val_images, in_memory=False)

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    class EvalEvil:
        def __reduce__(self):
            return (eval, (f"open({str(marker)!r}, 'w')",))

    for payload in (Evil(), EvalEvil()):
        bad = tmp_path / "bad"
        bad.mkdir(exist_ok=True)
        with open(bad / "val_data", "wb") as f:
            pickle.dump({"data": payload, "labels": [1]}, f)
        for in_memory in (True, False):
            with pytest.raises(DataError, match=r"refusing to load (posix|os|builtins)\.(system|eval)"):
                D.make_dataset(bad, "val", in_memory=in_memory)
        assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# Hugging Face datasets
# ----------------------------------------------------------------------------------------------

def test_hf_saved_dataset(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    images = [Image.fromarray(noise(40, 30, i)) for i in range(21)]
    ds = datasets.Dataset.from_dict({"image": images, "label": list(range(21))})
    ds = ds.cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "saved"))
    train = D.make_dataset(f"hf:{tmp_path / 'saved'}", "train", 16)
    val = D.make_dataset(f"hf:{tmp_path / 'saved'}", "val", 16)
    assert len(train) == 19 and len(val) == 2     # single split: every 20th example is val
    assert train[0].shape == (3, 16, 16) and train[0].dtype == torch.float32
    assert torch.equal(val[1], D.image_to_tensor(D.center_crop(np.asarray(images[20]), 16)))
    assert torch.equal(D.make_dataset(f"hf:{tmp_path / 'saved'}", "val", 16, in_memory=False)[1], val[1])

    dd = datasets.DatasetDict({"train": ds.select(range(15)),
                               "validation": ds.select(range(15, 21)).rename_column("image", "img")})
    dd.save_to_disk(str(tmp_path / "dict"))
    assert len(D.make_dataset(f"hf:{tmp_path / 'dict'}", "val", 16)) == 6
    assert len(D.make_dataset(f"hf:{tmp_path / 'dict'}", "train", 16)) == 15
    assert "Hugging Face dataset" in D.describe_source(f"hf:{tmp_path / 'dict'}")

    no_image = datasets.Dataset.from_dict({"text": ["a", "b"]})
    no_image.save_to_disk(str(tmp_path / "text"))
    with pytest.raises(DataError, match="no image column"):
        D.make_dataset(f"hf:{tmp_path / 'text'}")


def test_hf_repo_id_offline_is_one_data_error(monkeypatch):
    pytest.importorskip("datasets")
    from huggingface_hub import constants

    from vqexplore import hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "url_reachable", lambda url, timeout=3.0: False)  # the network, mocked
    with pytest.raises(DataError, match="cannot reach the Hugging Face Hub to load someone/imagenet-64"):
        D.make_dataset("hf:someone/imagenet-64:validation", "val")
