"""The built-in photos (``source="builtin"``): eight natural photos.

Natural colour photos that ship inside installed wheels, so a laptop run needs no download:
scikit-image ``astronaut``, ``coffee``, ``rocket``, ``motorcycle_left`` and ``chelsea``
(files in ``skimage/data/``, not fetched by pooch), matplotlib ``grace_hopper``, and
scikit-learn ``flower`` and ``china``. Left out on purpose: logos, the colour wheel,
microscopy (``ihc``), the retina and the Hubble deep field (mostly black), grayscale images,
and ``motorcycle_right`` (a near-copy of ``motorcycle_left``).
Fixed split by whole photo: **val = chelsea (cat fur, close-up) and china (landscape,
architecture)**; train = the other six. Validation never sees a pixel of a training photo.

Train items are random crops: a photo is picked uniformly, rescaled so that its shorter side
is log-uniform in ``[1.5 * size, 4 * size]`` (96..256 px for size 64), a ``size`` crop is taken
at a uniform position and flipped horizontally with p = 0.5. At 1.5x a crop holds two thirds
of the photo's short side (object level, like ImageNet 64x64 where a whole object fits); at 4x
a quarter (texture level). Log-uniform gives every zoom octave equal weight. The photos'
shorter sides are 300..512 px, so for size 64 nothing is ever upsampled (a target shorter side
is clipped to ``[size, native]``). Crop and resize are done in one antialiased PIL resize of
the crop box. The train set has a virtual length (``TRAIN_LENGTH`` = 10,000 crops per epoch).
Val items are a fixed set (``VAL_LENGTH`` = 256) of crops of the held-out photos at four
scales (shorter side 1.5x, 2x, 3x, 4x size), no flips, independent of ``seed``.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .base import _PhotoItems, _norm_split, _rng
from .decode import _RESAMPLE, _to_tensor, load_image

__all__ = ["BUILTIN_TRAIN_PHOTOS", "BUILTIN_VAL_PHOTOS", "builtin_photos", "BuiltinPhotos"]

_BUILTIN_FILES = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "motorcycle": ("skimage", "data/motorcycle_left.png"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "china": ("sklearn", "datasets/images/china.jpg"),
}
BUILTIN_TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "motorcycle", "grace_hopper", "flower")
BUILTIN_VAL_PHOTOS = ("chelsea", "china")
_PACKAGE_LABEL = {"skimage": "scikit-image", "matplotlib": "matplotlib", "sklearn": "scikit-learn"}


def _builtin_path(package: str, rel: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the built-in photos need {_PACKAGE_LABEL[package]}; install it with "
                        f"`pip install {_PACKAGE_LABEL[package]}`")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed {_PACKAGE_LABEL[package]}; reinstall it "
                        f"with `pip install --force-reinstall {_PACKAGE_LABEL[package]}`")
    return path


@functools.lru_cache(maxsize=1)
def _builtin_photos_cached() -> tuple[tuple[str, np.ndarray], ...]:
    out = []
    for name in BUILTIN_TRAIN_PHOTOS + BUILTIN_VAL_PHOTOS:
        package, rel = _BUILTIN_FILES[name]
        a = load_image(_builtin_path(package, rel))
        a.setflags(write=False)  # shared by every caller
        out.append((name, a))
    return tuple(out)


def builtin_photos(split: str | None = None) -> list[tuple[str, np.ndarray]]:
    """The built-in natural colour photos as ``(name, uint8 (H, W, 3))``, train photos first.

    split: None for all eight, ``"train"`` (6) or ``"val"`` (2: chelsea, china). Cached; the arrays
    are read-only."""
    photos = list(_builtin_photos_cached())
    if split is None:
        return photos
    names = BUILTIN_TRAIN_PHOTOS if _norm_split(split) == "train" else BUILTIN_VAL_PHOTOS
    return [p for p in photos if p[0] in names]


class BuiltinPhotos(_PhotoItems):
    """Crops of the built-in photos (see the module docstring for the split and the scales).

    split: "train" (random crops, virtual length ``TRAIN_LENGTH``) or "val" (fixed crops of the
    held-out photos, ``VAL_LENGTH``). Items: float32 ``(3, size, size)`` in [-1, 1]. Train item
    ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``; val items ignore seed and epoch.
    """

    TRAIN_LENGTH = 10_000
    VAL_LENGTH = 256
    SCALE_RANGE = (1.5, 4.0)        # train: shorter side / size, log-uniform
    VAL_SCALES = (1.5, 2.0, 3.0, 4.0)
    _VAL_SEED = 20240611

    def __init__(self, split: str = "train", size: int = 64, length: int | None = None, seed: int = 0):
        self._init_photos(split, size, seed)
        default = self.TRAIN_LENGTH if self.split == "train" else self.VAL_LENGTH
        self.length = default if length is None else int(length)
        self.names = tuple(n for n, _ in builtin_photos(self.split))

    def _arrays(self) -> list[tuple[str, np.ndarray]]:
        return builtin_photos(self.split)

    def crop_params(self, key: Any) -> tuple[int, float, float, float, bool]:
        """(photo index, x0, y0, side in photo pixels, flip) of an item."""
        epoch, i = self._key(key)
        images = self._images()
        s = self.size
        if self.split == "train":
            rng = _rng(self.seed, epoch, i)
            p = int(rng.integers(len(images)))
            lo, hi = self.SCALE_RANGE
            target = math.exp(rng.uniform(math.log(lo * s), math.log(hi * s)))
        else:
            rng = _rng(self._VAL_SEED, i)
            p = i % len(images)
            target = self.VAL_SCALES[(i // len(images)) % len(self.VAL_SCALES)] * s
        w, h = images[p].size
        short = min(w, h)
        target = min(max(target, s), max(short, s))  # never upsample beyond what `size` needs
        side = s * short / target                      # crop side in photo pixels (<= short)
        x0 = float(rng.uniform(0, max(w - side, 0)))
        y0 = float(rng.uniform(0, max(h - side, 0)))
        flip = bool(rng.random() < 0.5) if self.split == "train" else False
        return p, x0, y0, side, flip

    def __getitem__(self, key: Any) -> torch.Tensor:
        p, x0, y0, side, flip = self.crop_params(key)
        im = self._images()[p].resize((self.size, self.size), _RESAMPLE, box=(x0, y0, x0 + side, y0 + side))
        a = np.asarray(im)
        if flip:
            a = a[:, ::-1]
        return _to_tensor(a)
