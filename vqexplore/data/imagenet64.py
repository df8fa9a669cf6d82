"""The official "Downsampled ImageNet" files (``train_data_batch_N``, ``val_data``; .npz or pickle).

64x64, also the 32x32/16x16 ones (the side is read from the data): a folder holding them (or
in its direct subfolders) or one such file (then it is used for whichever split is asked).
Both the ``.npz`` variant (``np.load``, ``allow_pickle=False``) and the pickled original (read
with a restricted unpickler that only rebuilds numpy arrays) are read. Images are rows of
3 * s * s uint8 (R, G, B planes). Train: random horizontal flip (the images are already s x s;
no crop); ``size != s`` resizes.

Storage: in RAM when all the split's files fit ``IN_MEMORY_BUDGET`` (val: 50k images, 614 MB),
else memory-mapped: each file is converted once into a plain ``.npy`` file under
``vqexplore.utils.cache_dir()`` (``$VQEXPLORE_CACHE_DIR``, default ``~/.cache/vqexplore``), keyed by its path,
size and mtime, and
that file is mapped with ``np.load(mmap_mode="r")``. Memory mapping keeps a *global* shuffle
cheap (the page cache is shared by all loader workers and ranks on a node) where per-file lazy
loading would either thrash or restrict shuffling to within one file.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from ..utils import cache_dir
from .base import IN_MEMORY_BUDGET, _EpochItems, _norm_split, _rng
from .decode import _RESAMPLE, _first_line, _to_tensor

log = logging.getLogger(__name__)

__all__ = ["DownsampledImageNet"]

_IMAGENET64_RE = re.compile(r"^(train_data_batch_(\d+)|val_data)(\.npz)?$")


def _numpy_attr(*candidates: tuple[str, str]):
    import importlib

    for module, name in candidates:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    return None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays, dicts, lists and plain values; refuses every other global, so a
    crafted file cannot run code (no ``os.system``, no ``eval``, no arbitrary class)."""

    _ALLOWED = {
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): None,
        ("numpy._core.multiarray", "_reconstruct"): None,
        ("numpy.core.multiarray", "scalar"): None,
        ("numpy._core.multiarray", "scalar"): None,
        ("numpy.core.numeric", "_frombuffer"): None,
        ("numpy._core.numeric", "_frombuffer"): None,
        ("_codecs", "encode"): None,  # how Python 3 pickles bytes under protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module == "_codecs":
            import codecs
            return codecs.encode
        if module == "numpy":
            return self._ALLOWED[(module, name)]()
        short = module.split(".")[-1]
        obj = _numpy_attr((f"numpy._core.{short}", name), (f"numpy.core.{short}", name))
        if obj is None:
            raise pickle.UnpicklingError(f"numpy has no {module}.{name}")
        return obj


def _restricted_unpickle(path: Path) -> Any:
    with open(path, "rb") as f:
        return _NumpyOnlyUnpickler(f, encoding="latin1").load()  # latin1: Python 2 pickles too


class DownsampledImageNet(_EpochItems):
    """The official Downsampled ImageNet batch files as ``(3, size, size)`` items.

    files: the split's files (``train_data_batch_N[.npz]`` or ``val_data[.npz]``), in order.
    in_memory: True: load into RAM; False: memory-map (each file converted once to a ``.npy`` in
    the cache); None: RAM if the data fit ``IN_MEMORY_BUDGET``."""

    def __init__(self, files: list[Path], split: str = "train", size: int = 64, *, seed: int = 0,
                 in_memory: bool | None = None):
        self.files = [Path(f) for f in files]
        self.split = _norm_split(split)
        self.size = int(size)
        self.seed = int(seed)
        if in_memory is None:
            in_memory = self._estimated_bytes() <= IN_MEMORY_BUDGET
        self.in_memory = bool(in_memory)
        self._arrays: list[np.ndarray] | None = None
        self._mapped: list[Path] = []  # the converted .npy files, to reopen in workers
        arrays = [self._open(f) for f in self.files]
        sides = set()
        for f, a in zip(self.files, arrays):
            if a.ndim != 2 or a.dtype != np.uint8 or a.shape[1] % 3:
                raise DataError(f"{f} holds {a.dtype} data of shape {a.shape}, not rows of uint8 R, G, B "
                                f"planes; use the official Downsampled ImageNet files")
            side = math.isqrt(a.shape[1] // 3)
            if side < 1:
                raise DataError(f"{f} holds images of 0 x 0 pixels; use the official Downsampled ImageNet files")
            if side * side * 3 != a.shape[1]:
                raise DataError(f"{f} has rows of {a.shape[1]} values, not 3 * s * s; use the official "
                                f"Downsampled ImageNet files")
            sides.add(side)
        if len(sides) > 1:
            raise DataError(f"the files {[str(f) for f in self.files]} mix image sizes {sorted(sides)}; "
                            f"use files of one resolution")
        if sum(len(a) for a in arrays) == 0:
            raise DataError(f"{', '.join(str(f) for f in self.files)} {'holds' if len(self.files) == 1 else 'hold'} "
                            f"no images; use the official Downsampled ImageNet files")
        self.side = sides.pop()
        self._arrays = arrays
        self._offsets = np.cumsum([0] + [len(a) for a in arrays])

    def _estimated_bytes(self) -> int:
        """The decoded size: the zip's own record of the uncompressed ``data.npy`` for an .npz,
        the file size for a pickle."""
        total = 0
        for f in self.files:
            size = f.stat().st_size
            if f.suffix == ".npz":
                try:
                    with zipfile.ZipFile(f) as zf:
                        size = zf.getinfo("data.npy").file_size
                except (OSError, KeyError, zipfile.BadZipFile):
                    pass  # _open reports the problem
            total += size
        return total

    def _open(self, f: Path) -> np.ndarray:
        try:
            if self.in_memory:
                return self._load_full(f)
            cached = self._converted(f)
            self._mapped.append(cached)
            return np.load(cached, mmap_mode="r")
        except DataError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, KeyError) as e:
            raise DataError(f"{f} cannot be read as a Downsampled ImageNet file ({_first_line(e)}); "
                            f"download it again") from None

    @staticmethod
    def _load_full(f: Path) -> np.ndarray:
        if f.suffix == ".npz":
            with np.load(f, allow_pickle=False) as z:
                if "data" not in z.files:
                    raise DataError(f"{f} has no 'data' array (it has {z.files}); use the official files")
                return np.asarray(z["data"])
        try:
            obj = _restricted_unpickle(f)
        except pickle.UnpicklingError as e:
            raise DataError(f"{f} is not a plain Downsampled ImageNet pickle ({e}); it was not loaded, "
                            f"use the official files") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("data"), np.ndarray):
            raise DataError(f"{f} does not hold a dict with a 'data' array; use the official files")
        return obj["data"]

    def _converted(self, f: Path) -> Path:
        st = f.stat()
        key = hashlib.sha1(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
        out = cache_dir() / "imagenet64" / f"{f.name.split('.')[0]}-{key}.npy"
        if out.is_file():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        log.info("converting %s once to a memory-mappable %s", f, out)
        data = self._load_full(f)
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=data.shape)
        mm[:] = data
        mm.flush()
        del mm
        os.replace(tmp, out)  # atomic: concurrent ranks never read a half-written file
        return out

    def __getstate__(self):
        state = self.__dict__.copy()
        if not self.in_memory:  # reopen the maps in the worker instead of pickling their pages
            state["_arrays"] = None
        return state

    def _data(self) -> list[np.ndarray]:
        if self._arrays is None:
            self._arrays = [np.load(p, mmap_mode="r") for p in self._mapped]
        return self._arrays

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def image(self, i: int) -> np.ndarray:
        """The stored image ``i`` as uint8 ``(s, s, 3)`` (no resize, no flip)."""
        f = int(np.searchsorted(self._offsets, i, side="right")) - 1
        row = np.asarray(self._data()[f][i - self._offsets[f]])
        s = self.side
        return row.reshape(3, s, s).transpose(1, 2, 0)

    def __getitem__(self, key: Any) -> torch.Tensor:
        epoch, i = self._key(key)
        a = self.image(i)
        if self.side != self.size:
            a = np.asarray(Image.fromarray(np.ascontiguousarray(a)).resize((self.size, self.size), _RESAMPLE))
        if self.split == "train" and _rng(self.seed, epoch, i).random() < 0.5:
            a = a[:, ::-1]
        return _to_tensor(a)


def _imagenet64_files(root: Path) -> dict[str, list[Path]]:
    """{"train": [...batch files in order], "val": [val_data]} in root or its direct subfolders."""
    found: dict[str, dict[str, Path]] = {"train": {}, "val": {}}
    order: dict[str, int] = {}
    # root and its direct subfolders (the official zips unpack to Imagenet64_train_part1/ etc.);
    # not deeper, so that probing an ImageNet-layout folder does not list its 1.3M files
    candidates = [root] + [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    for d in candidates:
        for f in sorted(d.iterdir()):
            m = _IMAGENET64_RE.match(f.name)
            if not m or not f.is_file():
                continue
            split = "val" if m.group(1) == "val_data" else "train"
            stem = m.group(1)
            if stem in found[split] and found[split][stem].suffix == ".npz":
                continue  # prefer .npz (no unpickling) when both variants are present
            found[split][stem] = f
            order[stem] = int(m.group(2)) if m.group(2) else 0
    return {split: [found[split][k] for k in sorted(found[split], key=order.get)] for split in found}
