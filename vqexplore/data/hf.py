"""Hugging Face ``datasets`` sources: ``"hf:<repo id or local path>"`` or ``"hf:<name>:<split>"``.

``load_from_disk`` for a ``save_to_disk`` folder, else ``load_dataset``. The image column is the
first ``datasets.Image`` feature, else a column named ``image`` or ``img``. Split names:
train -> ``train``; val -> the first of ``validation``, ``val``, ``valid``, ``test``. A dataset
with a single split gives val every 20th example (index % 20 == 0) and train the rest. Offline
with a repo id (and ``HF_HUB_OFFLINE`` unset) is one ``DataError``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import _norm_split, _ShorterSideDataset
from .decode import _load, _Problem, _resize_shorter

__all__ = ["HFImageDataset"]

_HF_VAL_NAMES = ("validation", "val", "valid", "test")


def _hf_choose_split(names: list[str], split: str, hf_split: str | None, what: str) -> tuple[str, bool]:
    """(split name to load, whether to hash-split it ourselves)."""
    if hf_split:
        if hf_split not in names:
            raise DataError(f"{what} has no split {hf_split!r} (it has {names}); use one of them")
        return hf_split, False
    if split == "train":
        if "train" in names:
            return "train", len(names) == 1
        if len(names) == 1:
            return names[0], True
        raise DataError(f"{what} has no 'train' split (it has {names}); name one as hf:<name>:<split>")
    for n in _HF_VAL_NAMES:
        if n in names:
            return n, False
    if len(names) == 1:
        return names[0], True
    raise DataError(f"{what} has no validation split (it has {names}); name one as hf:<name>:<split>")


def _parse_hf(source: str) -> tuple[str, str | None]:
    rest = source[3:]
    if not rest:
        raise DataError("'hf:' needs a dataset, e.g. hf:user/name, hf:user/name:validation or hf:/path/to/saved")
    if Path(rest).exists() or ":" not in rest:
        return rest, None
    name, hf_split = rest.rsplit(":", 1)
    return name, hf_split or None


def _hf_load(name: str, split: str, hf_split: str | None):
    """-> (datasets.Dataset of the chosen split, whether to hash-split it, label)."""
    try:
        import datasets
    except ImportError:
        raise DataError("hf: sources need the `datasets` package; install it with `pip install datasets`") from None
    path = Path(name)
    if path.exists():
        what = f"the Hugging Face dataset at {path}"
        try:
            if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
                obj = datasets.load_from_disk(str(path))
            else:
                obj = datasets.load_dataset(str(path))
        except Exception as e:
            raise DataError(f"{path} cannot be loaded as a Hugging Face dataset ({str(e).splitlines()[0]}); "
                            f"pass a folder written by save_to_disk or a folder of data files") from None
        if isinstance(obj, datasets.Dataset):
            if hf_split:
                raise DataError(f"{what} has a single split; drop ':{hf_split}' from the source")
            return obj, True, what
        chosen, hashed = _hf_choose_split(list(obj.keys()), split, hf_split, what)
        return obj[chosen], hashed, f"{what} ({chosen})"
    what = f"the Hugging Face dataset {name}"
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        from .. import hub

        if not hub.url_reachable(constants.ENDPOINT):
            raise DataError(f"cannot reach the Hugging Face Hub to load {name} (offline?); connect to the internet, "
                            f"set HF_HUB_OFFLINE=1 to use a cached copy, or pass hf:<folder saved with save_to_disk>")
    try:
        if hf_split is None:
            names = datasets.get_dataset_split_names(name)
            chosen, hashed = _hf_choose_split(list(names), split, None, what)
        else:
            chosen, hashed = hf_split, False
        ds = datasets.load_dataset(name, split=chosen)
    except DataError:
        raise
    except (ConnectionError, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "offline" in first.lower() or "reach" in first.lower() or isinstance(e, ConnectionError):
            raise DataError(f"{name} is not in the local Hugging Face cache and the Hub cannot be reached; connect "
                            f"to the internet or pass hf:<folder saved with save_to_disk>") from None
        raise DataError(f"{what} cannot be loaded ({first}); check the name") from None
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{what} cannot be loaded ({type(e).__name__}: {first}); check the name and split") from None
    return ds, hashed, f"{what} ({chosen})"


def _hf_image_column(ds) -> tuple[str, bool]:
    import datasets

    for col, feature in ds.features.items():
        if isinstance(feature, datasets.Image):
            return col, True
    for col in ("image", "img"):
        if col in ds.column_names:
            return col, False
    raise DataError(f"no image column in the dataset (columns: {ds.column_names}); it needs a datasets.Image "
                    f"feature or a column named 'image' or 'img'")


class HFImageDataset(_ShorterSideDataset):
    """One split of a Hugging Face dataset's image column as ``(3, size, size)`` items."""

    def __init__(self, ds, split: str = "train", size: int = 64, *, seed: int = 0,
                 in_memory: bool | None = None, hash_split: bool = False, label: str = "hf dataset"):
        import datasets

        col, is_image = _hf_image_column(ds)
        ds = ds.select_columns([col])
        if is_image:
            ds = ds.cast_column(col, datasets.Image(decode=False))  # we decode: limits, errors, draft
        self._ds, self._col = ds, col
        split_n = _norm_split(split)
        if hash_split:  # a single split: every 20th example is val
            idx = np.arange(len(ds))
            self._indices = idx[idx % 20 == 0] if split_n == "val" else idx[idx % 20 != 0]
        else:
            self._indices = None
        super().__init__(split, size, seed, in_memory, label)
        if len(self) == 0:
            raise DataError(f"{label} has no {split_n} images; use a dataset with more examples")

    def _num_images(self) -> int:
        return len(self._indices) if self._indices is not None else len(self._ds)

    def _decode_resized(self, i: int) -> np.ndarray:
        j = int(self._indices[i]) if self._indices is not None else i
        value = self._ds[j][self._col]
        try:
            if isinstance(value, dict) and ("bytes" in value or "path" in value):
                src = value.get("bytes") or value.get("path")
                if src is None:
                    raise _Problem("the example has neither bytes nor a path")
                a = _load(src, max_pixels=None, draft=self.size)
            else:
                a = _load(np.asarray(value) if isinstance(value, list) else value, max_pixels=None, draft=self.size)
        except _Problem as p:
            raise DataError(f"example {j} of {self.label} is not a readable image ({p.reason}); "
                            f"fix or drop it") from None
        return _resize_shorter(a, self.size)
