"""The photo corpus (``source="photos"``): 31 natural photos, split by whole photo.

Photos
    The 23 photographs of Debian's ``mate-backgrounds`` and ``plasma-workspace-wallpapers``
    packages, shipped in ``vqexplore/data/photos/`` (shorter side 512 px, JPEG quality 90; origin,
    author and licence of each in ``photos/credits.csv``; re-created by
    ``scripts/make_photos.py``), plus the eight built-in photos (``builtin``), which come with
    scikit-image, matplotlib and scikit-learn. Validation photos (``PHOTOS_VAL``): six shipped
    ones chosen to differ (a landscape with boats, a forest, a ladybird close-up, leaf texture
    with drops, architecture in black and white, coloured cups) and the built-in val photos
    (chelsea, china). Train: the other 23. Validation never sees a pixel of a training photo.

Train items (``PhotoCorpus("train")``)
    The demo resizes a *whole* upload so that its shorter side is 64 and centre-crops it;
    training therefore covers every scale from native pixels up to the whole photo: a photo is
    picked uniformly, a square crop side ``c`` (in photo pixels) is drawn log-uniformly in
    ``[min(size, short), short]`` (``short`` = the photo's shorter side: for size 64 on a 512-px
    photo, 1:1 pixels to 8x reduction, three octaves with equal weight), the crop is placed
    uniformly (sub-pixel position), resized to ``size x size`` in one antialiased PIL resize and
    flipped horizontally with p = 0.5. Item ``i`` of epoch ``e`` is a pure function of
    ``(seed, e, i)``. Virtual length ``TRAIN_LENGTH`` (10,000 crops per epoch).

Val items (``PhotoCorpus("val")``)
    Each held-out photo as the demo sees an upload in its 64 mode: shorter side resized to
    ``size`` (antialiased), centre crop ``size x size`` (``center_crop``). One item per photo.

GPU training
    ``photo_arrays("train")`` returns the training photos as uint8 ``(H, W, 3)`` arrays;
    ``PhotoStack(arrays, device)`` keeps them on the device and ``stack.crops(n, size, rng)``
    cuts a batch of ``n`` crops with the same scale/position/flip distribution in a few
    ``torchvision.ops.roi_align`` calls (box-filter antialiasing), so a training loop on a GPU
    never waits for PIL::

        stack = PhotoStack(photo_arrays("train"), device="cuda")
        rng = np.random.default_rng(seed)
        for step in range(steps):
            x = stack.crops(256, 64, rng)     # float32 (256, 3, 64, 64) in [-1, 1] on the GPU
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .base import _PhotoItems, _norm_split, _rng
from .builtin import BUILTIN_TRAIN_PHOTOS, BUILTIN_VAL_PHOTOS, builtin_photos
from .decode import _RESAMPLE, _to_tensor, center_crop, load_image

__all__ = ["PHOTOS_DIR", "PHOTOS_VAL", "photo_names", "photo_arrays", "PhotoCorpus", "PhotoStack"]

PHOTOS_DIR = Path(__file__).resolve().parent / "photos"
"""The shipped photographs (``*.jpg``) and their ``credits.csv``."""

PHOTOS_VAL = ("kde-evening-glow", "kde-path", "mate-ladybird", "mate-rain-drops", "kde-grey",
              "kde-colorful-cups") + BUILTIN_VAL_PHOTOS
"""Whole photos held out for validation (names without ``.jpg``; the last two are built-in)."""


def _shipped_names() -> list[str]:
    if not PHOTOS_DIR.is_dir():
        raise DataError(f"the photo corpus folder {PHOTOS_DIR} is missing; reinstall vqexplore or re-create it "
                        f"with `python scripts/make_photos.py`")
    return sorted(p.stem for p in PHOTOS_DIR.glob("*.jpg"))


def photo_names(split: str | None = None) -> list[str]:
    """Names of the corpus photos: shipped ones (sorted) then the built-in ones.

    split: None (all 31), ``"train"`` (23) or ``"val"`` (``PHOTOS_VAL``, 8)."""
    names = _shipped_names() + list(BUILTIN_TRAIN_PHOTOS + BUILTIN_VAL_PHOTOS)
    if split is None:
        return names
    val = _norm_split(split) == "val"
    return [n for n in names if (n in PHOTOS_VAL) == val]


@functools.lru_cache(maxsize=1)
def _all_photos() -> dict[str, np.ndarray]:
    out = {}
    for name in _shipped_names():
        a = load_image(PHOTOS_DIR / f"{name}.jpg")
        a.setflags(write=False)  # shared by every caller
        out[name] = a
    out.update(dict(builtin_photos()))
    return out


def photo_arrays(split: str | None = "train") -> list[tuple[str, np.ndarray]]:
    """The corpus photos as ``(name, uint8 (H, W, 3))``, in ``photo_names(split)`` order.

    Shorter sides: 512 px (shipped) and 300..512 px (built-in). Cached; the arrays are read-only."""
    photos = _all_photos()
    return [(n, photos[n]) for n in photo_names(split)]


def crop_boxes(rng: np.random.Generator, shapes: np.ndarray, n: int, size: int) -> dict[str, np.ndarray]:
    """Draw ``n`` random-scale crops of photos with ``shapes`` ((N, 2) heights, widths).

    -> {"photo": int (n,), "x0", "y0", "side": float (n,) in photo pixels, "flip": bool (n,)}.
    Side log-uniform in ``[min(size, short), short]``; position uniform; flip with p = 0.5."""
    shapes = np.asarray(shapes, dtype=np.float64).reshape(-1, 2)
    photo = rng.integers(len(shapes), size=n)
    h, w = shapes[photo, 0], shapes[photo, 1]
    short = np.minimum(h, w)
    lo = np.minimum(float(size), short)
    side = np.exp(rng.uniform(np.log(lo), np.log(short)))
    x0 = rng.uniform(0.0, 1.0, n) * (w - side)
    y0 = rng.uniform(0.0, 1.0, n) * (h - side)
    flip = rng.random(n) < 0.5
    return {"photo": photo, "x0": x0, "y0": y0, "side": side, "flip": flip}


class PhotoCorpus(_PhotoItems):
    """The photo corpus as float32 ``(3, size, size)`` items in [-1, 1] (see the module docstring).

    split: "train" (random-scale crops, virtual length ``TRAIN_LENGTH``) or "val" (each held-out
    photo resized and centre-cropped). Train item ``i`` of epoch ``e`` is a pure function of
    ``(seed, e, i)``; val items ignore seed and epoch.
    """

    TRAIN_LENGTH = 10_000

    def __init__(self, split: str = "train", size: int = 64, length: int | None = None, seed: int = 0):
        self._init_photos(split, size, seed)
        self.names = tuple(photo_names(self.split))
        if self.split == "train":
            self.length = self.TRAIN_LENGTH if length is None else int(length)
        else:
            self.length = len(self.names) if length is None else min(int(length), len(self.names))
        self._shapes = np.array([a.shape[:2] for _, a in photo_arrays(self.split)])

    def _arrays(self) -> list[tuple[str, np.ndarray]]:
        return photo_arrays(self.split)

    def crop_params(self, key: Any) -> tuple[int, float, float, float, bool]:
        """(photo index, x0, y0, side in photo pixels, flip) of a train item."""
        epoch, i = self._key(key)
        b = crop_boxes(_rng(self.seed, epoch, i), self._shapes, 1, self.size)
        return int(b["photo"][0]), float(b["x0"][0]), float(b["y0"][0]), float(b["side"][0]), bool(b["flip"][0])

    def __getitem__(self, key: Any) -> torch.Tensor:
        if self.split == "val":
            _, i = self._key(key)
            return _to_tensor(center_crop(photo_arrays("val")[i][1], self.size))
        p, x0, y0, side, flip = self.crop_params(key)
        im = self._images()[p].resize((self.size, self.size), _RESAMPLE, box=(x0, y0, x0 + side, y0 + side))
        a = np.asarray(im)
        if flip:
            a = a[:, ::-1]
        return _to_tensor(a)


class PhotoStack:
    """Photos on one device, cut into batches of random-scale crops there (GPU training).

    photos: uint8 ``(H, W, 3)`` arrays or ``(name, array)`` pairs (as ``photo_arrays`` returns).
    Held as one float32 ``(N, 3, Hmax, Wmax)`` tensor in [-1, 1], each photo edge-padded (so a
    sample at a photo's border never mixes in padding). About 0.15 GB for the 23 train photos.
    """

    def __init__(self, photos: list, device: str | torch.device = "cpu"):
        arrays = [p[1] if isinstance(p, tuple) else p for p in photos]
        if not arrays:
            raise DataError("PhotoStack needs at least one photo")
        self.shapes = np.array([a.shape[:2] for a in arrays], dtype=np.int64)
        hmax, wmax = (int(v) for v in self.shapes.max(0))
        self.device = torch.device(device)
        self.images = torch.empty(len(arrays), 3, hmax, wmax, device=self.device)
        for k, a in enumerate(arrays):
            t = _to_tensor(np.asarray(a)).to(self.device)[None]
            h, w = a.shape[:2]
            self.images[k] = torch.nn.functional.pad(t, (0, wmax - w, 0, hmax - h), mode="replicate")[0]

    def crops(self, n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
        """``n`` random-scale crops: float32 ``(n, 3, size, size)`` in [-1, 1] on the device.

        Boxes come from ``crop_boxes`` (drawn on the CPU from ``rng``: the same ``rng`` state gives
        the same batch on any device). Each output pixel averages ``r x r`` bilinear samples of
        its footprint, ``r = ceil(side / size)`` (a box filter: antialiased downscaling)."""
        from torchvision.ops import roi_align

        b = crop_boxes(rng, self.shapes, n, size)
        boxes = np.stack([b["photo"], b["x0"], b["y0"], b["x0"] + b["side"], b["y0"] + b["side"]], 1)
        boxes_t = torch.as_tensor(boxes, dtype=torch.float32, device=self.device)
        ratio = np.maximum(1, np.ceil(b["side"] / size - 1e-6)).astype(np.int64)
        out = torch.empty(n, 3, size, size, device=self.device)
        for r in np.unique(ratio):  # one roi_align call per sampling ratio
            idx = torch.as_tensor(np.flatnonzero(ratio == r), device=self.device)
            out[idx] = roi_align(self.images, boxes_t[idx], output_size=size, spatial_scale=1.0,
                                 sampling_ratio=int(r), aligned=True)
        flip = torch.as_tensor(np.flatnonzero(b["flip"]), device=self.device)
        out[flip] = out[flip].flip(-1)
        return out.clamp_(-1.0, 1.0)


def describe() -> str:
    shipped = len(_shipped_names())
    return (f"photo corpus ({shipped} photographs from Debian's mate-backgrounds and plasma-workspace-wallpapers "
            f"+ {len(BUILTIN_TRAIN_PHOTOS) + len(BUILTIN_VAL_PHOTOS)} built-in photos), "
            f"{len(photo_names('train'))} train / {len(photo_names('val'))} val photos")

