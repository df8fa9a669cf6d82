"""One name for every data source: ``make_dataset`` and ``describe_source``.

* ``"builtin"``: the eight built-in photos (``builtin``).
* ``"photos"``: the photo corpus, shipped photographs + the built-in ones (``corpus``).
* A folder in the ImageNet layout or any folder of images (``folders``).
* The official "Downsampled ImageNet" files, a folder of them or one file (``imagenet64``).
* ``"hf:<repo id or local path>[:<split>]"``: a Hugging Face dataset (``hf``).
* Anything else: ``DataError`` naming the path and what to do.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..errors import DataError
from . import NAMED_SOURCES
from .base import _norm_split
from .builtin import _BUILTIN_FILES, _PACKAGE_LABEL, BUILTIN_TRAIN_PHOTOS, BUILTIN_VAL_PHOTOS, BuiltinPhotos
from .corpus import PhotoCorpus
from .corpus import describe as _describe_corpus
from .folders import (IMAGE_EXTENSIONS, ImageFolderDataset, _hash_split, _imagenet_split_dir, _is_imagenet_layout,
                      _list_images)
from .hf import HFImageDataset, _hf_load, _parse_hf
from .imagenet64 import _IMAGENET64_RE, DownsampledImageNet, _imagenet64_files

__all__ = ["NAMED_SOURCES", "make_dataset", "describe_source"]


def _resolve(source: str | os.PathLike) -> tuple[str, Any]:
    """-> (kind, details). kinds: builtin, photos, hf, imagenet64, imagenet_layout, folder."""
    if isinstance(source, str) and source.strip().lower() in NAMED_SOURCES:
        return source.strip().lower(), None
    if isinstance(source, str) and source.startswith("hf:"):
        return "hf", _parse_hf(source)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"data source {source} does not exist; pass 'builtin', 'photos', an image folder, the "
                        f"Downsampled ImageNet files or hf:<dataset>")
    if path.is_file():
        if _IMAGENET64_RE.match(path.name):
            return "imagenet64", {"train": [path], "val": [path], "single": True}
        raise DataError(f"{path} is a file but not a Downsampled ImageNet batch file (train_data_batch_N or "
                        f"val_data); pass a folder of images or 'builtin'")
    try:
        files64 = _imagenet64_files(path)
    except OSError as e:
        raise DataError(f"{path} cannot be listed ({e.strerror or e}); check its permissions") from None
    if files64["train"] or files64["val"]:
        return "imagenet64", {**files64, "root": path}
    if _is_imagenet_layout(path):
        return "imagenet_layout", path
    return "folder", path


def _folder_files(path: Path, split: str) -> np.ndarray:
    files = _list_images(path)
    if len(files) == 0:
        raise DataError(f"{path} holds no images ({', '.join(IMAGE_EXTENSIONS)}); put images in it or pass "
                        f"another folder")
    is_val = _hash_split(files)
    chosen = files[is_val] if split == "val" else files[~is_val]
    if len(chosen) == 0:
        raise DataError(f"{path} has too few images to hold out a {split} split ({len(files)} image(s)); add images")
    return chosen


def make_dataset(source: str | os.PathLike, split: str = "train", size: int = 64, *, seed: int = 0,
                 in_memory: bool | None = None) -> Dataset:
    """A dataset of float32 ``(3, size, size)`` images in [-1, 1] (no labels).

    source: "builtin", "photos", a folder (ImageNet layout or any images), the Downsampled ImageNet files,
        or "hf:<repo id | saved folder>[:<split>]" (see the module docstring).
    split: "train" (random crops and flips; call ``set_epoch``) or "val" (deterministic).
    in_memory: None = automatic (RAM if it fits ``IN_MEMORY_BUDGET``), True, False. Ignored for
        "builtin" and "photos" (always in RAM).
    Raises DataError naming the source and what to do.
    """
    split = _norm_split(split)
    kind, info = _resolve(source)
    if kind == "builtin":
        return BuiltinPhotos(split, size=size, seed=seed)
    if kind == "photos":
        return PhotoCorpus(split, size=size, seed=seed)
    if kind == "hf":
        name, hf_split = info
        ds, hashed, label = _hf_load(name, split, hf_split)
        return HFImageDataset(ds, split, size, seed=seed, in_memory=in_memory, hash_split=hashed, label=label)
    if kind == "imagenet64":
        files = info[split]
        if not files:
            want = "val_data (Imagenet64_val)" if split == "val" else "train_data_batch_1..10 (Imagenet64_train)"
            raise DataError(f"{source} has no {split} files of Downsampled ImageNet; add {want} beside the others")
        return DownsampledImageNet(files, split, size, seed=seed, in_memory=in_memory)
    if kind == "imagenet_layout":
        d = _imagenet_split_dir(info, split)
        if d is None:
            raise DataError(f"{info} has no {'train' if split == 'train' else 'val'}/ folder; add it (ImageNet layout: "
                            f"train/<class>/*.JPEG, val/<class>/*.JPEG)")
        files = _list_images(d)
        if len(files) == 0:
            raise DataError(f"{d} holds no images; put the {split} images in it")
        return ImageFolderDataset(d, files, split, size, seed=seed, in_memory=in_memory, label=str(d))
    files = _folder_files(info, split)
    return ImageFolderDataset(info, files, split, size, seed=seed, in_memory=in_memory, label=str(info))


def describe_source(source: str | os.PathLike) -> str:
    """A short human label of a data source, for model cards and logs."""
    kind, info = _resolve(source)
    if kind == "builtin":
        packages = ", ".join(dict.fromkeys(_PACKAGE_LABEL[_BUILTIN_FILES[n][0]] for n in _BUILTIN_FILES))
        return (f"built-in photos ({packages}), {len(BUILTIN_TRAIN_PHOTOS)} train / "
                f"{len(BUILTIN_VAL_PHOTOS)} val photos")
    if kind == "photos":
        return _describe_corpus()
    if kind == "hf":
        name, hf_split = info
        where = "saved at " + name if Path(name).exists() else name
        return f"Hugging Face dataset {where}" + (f" (split {hf_split})" if hf_split else "")
    if kind == "imagenet64":
        if info.get("single"):
            return f"Downsampled ImageNet file {info['train'][0]}"
        root = info["root"]
        return (f"Downsampled ImageNet at {root} ({len(info['train'])} train batch files"
                f"{', val_data' if info['val'] else ', no val_data'})")
    if kind == "imagenet_layout":
        counts = []
        for split in ("train", "val"):
            d = _imagenet_split_dir(info, split)
            counts.append(len(_list_images(d)) if d else 0)
        return f"image folder {info} (ImageNet layout: {counts[0]} train / {counts[1]} val images)"
    files = _list_images(info)
    n_val = int(_hash_split(files).sum()) if len(files) else 0
    return f"image folder {info} ({len(files) - n_val} train / {n_val} val images, val by path hash)"
