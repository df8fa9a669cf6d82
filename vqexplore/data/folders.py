"""Folders of image files: the ImageNet layout or any folder, split by a stable hash of the path.

* A folder in the ImageNet layout (``train/<class>/*.JPEG`` and ``val/...``; ``validation/``
  also accepted): the split's subfolder, recursively.
* Any other folder of images (recursive, hidden files skipped): split by a stable hash of the
  relative path: blake2b(path) mod 10000 < 500, i.e. about 5% val. A folder of two or more
  images whose hash puts none in val gives its lowest-hash image to val so val is never empty.
  Point at the parent of ``train/`` to use an official split.

Train: shorter side resized to ``size`` then a random ``size`` crop and a random horizontal
flip; val: shorter side resized then a centre crop. JPEGs at least twice ``size`` are decoded
at 1/2, 1/4 or 1/8 scale (libjpeg draft mode, never below ``size``) before the antialiased
resize: several times faster on ImageNet, same crop geometry, and just as deterministic.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import _ShorterSideDataset
from .decode import _load, _Problem, _resize_shorter

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm")
_VAL_FRACTION_OF_10000 = 500


def _path_hash(rel: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(rel, digest_size=8).digest(), "big")


@functools.lru_cache(maxsize=16)
def _list_images_cached(root: str, mtime_ns: int) -> np.ndarray:
    found: list[bytes] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink cycle
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, root)
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                rel = f if rel_dir == "." else os.path.join(rel_dir, f)
                found.append(os.fsencode(rel.replace(os.sep, "/")))
    found.sort()
    # one contiguous bytes array: cheap to share with forked workers (no per-string refcounts)
    return np.array(found, dtype=np.bytes_) if found else np.array([], dtype="S1")


def _list_images(root: Path) -> np.ndarray:
    """Sorted relative paths (bytes) of the image files under ``root``, recursively."""
    return _list_images_cached(str(root.resolve()), root.stat().st_mtime_ns)


def _imagenet_split_dir(root: Path, split: str) -> Path | None:
    names = ("train",) if split == "train" else ("val", "validation")
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


def _is_imagenet_layout(root: Path) -> bool:
    return any((root / n).is_dir() for n in ("train", "val", "validation"))


def _hash_split(files: np.ndarray) -> np.ndarray:
    """Boolean mask: which files belong to val (about 5%, at least one of two or more)."""
    hashes = np.array([_path_hash(bytes(f)) for f in files], dtype=np.uint64)
    is_val = (hashes % np.uint64(10000)) < np.uint64(_VAL_FRACTION_OF_10000)
    if len(files) >= 2 and not is_val.any():
        is_val[int(np.argmin(hashes))] = True
    return is_val


class ImageFolderDataset(_ShorterSideDataset):
    """Image files under ``root`` (relative paths in ``files``) as ``(3, size, size)`` items."""

    def __init__(self, root: str | Path, files: np.ndarray, split: str = "train", size: int = 64, *,
                 seed: int = 0, in_memory: bool | None = None, label: str | None = None):
        self.root = Path(root)
        self.files = files
        super().__init__(split, size, seed, in_memory, label or str(root))

    def _num_images(self) -> int:
        return len(self.files)

    def path(self, i: int) -> Path:
        return self.root / os.fsdecode(bytes(self.files[i]))

    def _decode_resized(self, i: int) -> np.ndarray:
        path = self.path(i)
        try:
            a = _load(path, max_pixels=None, draft=self.size)
        except _Problem as p:
            raise DataError(f"{path} is not a readable image ({p.reason}); remove or replace it") from None
        return _resize_shorter(a, self.size)
