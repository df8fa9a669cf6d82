"""What every dataset here shares: items keyed by ``(epoch, index)`` and the shorter-side datasets.

Every random choice of a train item is a pure function of ``(seed, epoch, index)``
(``np.random.default_rng([seed, epoch, index])``), never the global RNG, so the data do not
depend on ``num_workers`` or on whether the run was resumed (see ``loaders`` for how the epoch
reaches the workers).

``in_memory=None`` decodes everything once at construction (in threads) and keeps uint8 in RAM
when the estimate fits ``IN_MEMORY_BUDGET`` (2 GiB); otherwise items are decoded per access.
Results are identical either way.
"""
from __future__ import annotations

import concurrent.futures
import logging
import operator
import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .decode import _to_tensor

log = logging.getLogger(__name__)

IN_MEMORY_BUDGET = 2 * 1024 ** 3
"""``in_memory=None`` keeps a decoded dataset in RAM when its uint8 pixels fit in this many bytes."""


def _rng(*key: int) -> np.random.Generator:
    """A generator that is a pure function of the integers in ``key``."""
    return np.random.default_rng([int(k) & 0xFFFFFFFFFFFFFFFF for k in key])


def _norm_split(split: str) -> str:
    s = str(split).lower()
    if s == "train":
        return "train"
    if s in ("val", "valid", "validation"):
        return "val"
    raise DataError(f"unknown split {split!r}; use 'train' or 'val'")


class _EpochItems(Dataset):
    """Indexable by ``i`` (uses ``self.epoch``) or by an ``(epoch, i)`` key from ``EpochSampler``."""

    accepts_epoch_keys = True
    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops/flips of ``epoch`` for items indexed by a plain integer."""
        self.epoch = int(epoch)

    def _key(self, key: Any) -> tuple[int, int]:
        if isinstance(key, tuple):
            epoch, index = int(key[0]), operator.index(key[1])
        else:
            epoch, index = self.epoch, operator.index(key)
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} items")
        return epoch, index


class _PhotoItems(_EpochItems):
    """Items cut from a few photos held in memory (built-in photos, the photo corpus).

    Subclasses set ``split``, ``size``, ``seed`` and ``length`` (``_init_photos`` checks the
    common ones) and implement ``_arrays()`` -> ``[(name, uint8 (H, W, 3))]`` of their split; the
    PIL images are made once per process (loader workers rebuild them, they are not pickled)."""

    _pil = None

    def _init_photos(self, split: str, size: int, seed: int) -> None:
        self.split, self.size, self.seed = _norm_split(split), int(size), int(seed)
        if self.size < 1:
            raise DataError(f"image size must be a positive integer, got {size}")

    def _arrays(self) -> list:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.length

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_pil"] = None
        return state

    def _images(self) -> list:
        if self._pil is None:
            from PIL import Image

            self._pil = [Image.fromarray(np.asarray(a)) for _, a in self._arrays()]
        return self._pil


class _ShorterSideDataset(_EpochItems):
    """Items whose decoded image has shorter side ``size``; train: random crop + flip, val: centre.

    Subclasses implement ``_num_images`` and ``_decode_resized(i)`` (uint8 HWC, shorter side = size).
    """

    def __init__(self, split: str, size: int, seed: int, in_memory: bool | None, label: str):
        self.split = _norm_split(split)
        self.size = int(size)
        self.seed = int(seed)
        self.label = label
        self._flat: np.ndarray | None = None
        self._offsets = self._shapes = None
        if self.size < 1:
            raise DataError(f"image size must be a positive integer, got {size}")
        if in_memory is None:
            in_memory = self._num_images() * self.size * self.size * 3 * 1.5 <= IN_MEMORY_BUDGET
        if in_memory:
            self._materialize()

    def _num_images(self) -> int:
        raise NotImplementedError

    def _decode_resized(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return self._num_images()

    @property
    def in_memory(self) -> bool:
        return self._flat is not None

    def _materialize(self) -> None:
        n = self._num_images()
        log.info("decoding %d images of %s into memory", n, self.label)
        workers = max(1, min(8, os.cpu_count() or 1))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:  # PIL decodes without the GIL
            arrays = list(pool.map(self._decode_resized, range(n)))
        shapes = np.array([a.shape[:2] for a in arrays], dtype=np.int64).reshape(n, 2)
        sizes = shapes[:, 0] * shapes[:, 1] * 3
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        flat = np.empty(int(offsets[-1]), dtype=np.uint8)
        for i, a in enumerate(arrays):
            flat[offsets[i]:offsets[i + 1]] = a.reshape(-1)
        self._flat, self._offsets, self._shapes = flat, offsets, shapes

    def _resized(self, i: int) -> np.ndarray:
        if self._flat is not None:
            h, w = self._shapes[i]
            return self._flat[self._offsets[i]:self._offsets[i + 1]].reshape(h, w, 3)
        return self._decode_resized(i)

    def __getitem__(self, key: Any) -> torch.Tensor:
        """float32 ``(3, size, size)`` in [-1, 1]."""
        epoch, i = self._key(key)
        a = self._resized(i)
        h, w = a.shape[:2]
        s = self.size
        if self.split == "train":
            rng = _rng(self.seed, epoch, i)
            y = int(rng.integers(0, h - s + 1))
            x = int(rng.integers(0, w - s + 1))
            a = a[y:y + s, x:x + s]
            if rng.random() < 0.5:
                a = a[:, ::-1]
        else:
            y, x = (h - s) // 2, (w - s) // 2
            a = a[y:y + s, x:x + s]
        return _to_tensor(a)
