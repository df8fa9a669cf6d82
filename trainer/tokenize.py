"""``python -m trainer tokenize``: the token grids of a whole dataset, for training a downstream model.

Writes into ``--out DIR``:

- ``tokens.npy``: a NumPy array file of shape (N, h, w), uint16 when K <= 65,536 else int32,
  filled in place through a memory map (``np.load(DIR / "tokens.npy", mmap_mode="r")`` reads it
  without loading it);
- ``index.json``: what the tokens are: checkpoint path and the sha256 of its model.safetensors,
  its config, codebook size, grid, dtype, data source, split, image size, seed, and the id of
  every image (row i of tokens.npy is image ``image_ids[i]``: a relative file path, "<batch
  file>:<row>", a Hugging Face example index, or "<photo>#<i>" for the built-in photos);
  ``complete`` is true once every row is written;
- ``progress.json`` while it runs: how many rows are final.

Streaming: images are decoded per batch by a DataLoader (``--workers`` processes), so memory does
not grow with the dataset. Resumable: rerunning the same command continues after the last row
recorded in progress.json (rows are written, flushed, then counted); a DIR that holds tokens of
another checkpoint or dataset is refused with one sentence instead of being mixed.

Items are those of ``vqexplore.data.make_dataset(data, split, size, seed=seed)``: centre crops for
"val", and for "train" the crops and flips the trainer draws at epoch 0 (a pure function of the
seed and the index, so a resumed run writes the same tokens).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vqexplore.errors import CheckpointError, DataError
from vqexplore.utils import write_atomic


FORMAT = "vqexplore-tokens/1"
TOKENS_NAME, INDEX_NAME, PROGRESS_NAME = "tokens.npy", "index.json", "progress.json"
# progress.json is rewritten (after a flush of the memory map) at most this often, in seconds:
# a crash loses at most this much work, and small batches do not pay a fsync each.
CHECKPOINT_SECONDS = 5.0


def image_ids(dataset) -> list[str]:
    """A stable id for every item of a ``make_dataset`` dataset (see the module docstring)."""
    n = len(dataset)
    files = getattr(dataset, "files", None)
    if files is not None and hasattr(dataset, "root"):  # a folder of images: relative paths
        return [os.fsdecode(bytes(f)) for f in files]
    offsets = getattr(dataset, "_offsets", None)
    if isinstance(files, list) and offsets is not None:  # Downsampled ImageNet batch files
        ids = []
        for f, start, stop in zip(files, offsets[:-1], offsets[1:]):
            ids.extend(f"{Path(f).name}:{r}" for r in range(int(stop - start)))
        return ids
    indices = getattr(dataset, "_indices", None)
    if hasattr(dataset, "_ds"):  # Hugging Face: the example index in its split
        return [str(int(indices[i])) if indices is not None else str(i) for i in range(n)]
    names = getattr(dataset, "names", None)
    if names:  # built-in photos: crops of a few photos
        if dataset.split == "val":
            return [f"{names[i % len(names)]}#{i}" for i in range(n)]
        return [f"builtin-{dataset.split}#{i}" for i in range(n)]
    return [str(i) for i in range(n)]


def _dtype(codebook_size: int) -> np.dtype:
    return np.dtype(np.uint16) if codebook_size <= 1 << 16 else np.dtype(np.int32)


def _progress(out: Path) -> int:
    try:
        return int(json.loads((out / PROGRESS_NAME).read_text())["done"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _same_job(old: dict, new: dict) -> str | None:
    """The first field in which an existing index differs from this job, or None."""
    for key in ("format", "checkpoint_sha256", "data", "split", "size", "seed", "num_images", "grid", "dtype",
                "image_ids_sha256"):
        if old.get(key) != new.get(key):
            return key
    return None


def _ids_digest(ids: list[str]) -> str:
    import hashlib

    h = hashlib.sha256()
    for i in ids:
        h.update(i.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def tokenize_dataset(ckpt: str, data: str, out: str | os.PathLike, *, split: str = "train", size: int | None = None,
                     batch_size: int = 256, workers: int = 2, device: str = "auto", seed: int = 0,
                     max_images: int | None = None, progress: bool = True) -> dict:
    """Tokenize ``data`` with checkpoint ``ckpt`` into ``out`` (see the module docstring).

    size: image side (default: the run's data.size when the checkpoint belongs to a run, else the
    checkpoint's training resolution, else 64).
    max_images: only the first N items. Returns the final index (without ``image_ids``), with
    ``seconds`` and ``images_per_second`` of this call.
    """
    import vqexplore
    from vqexplore.data import make_dataset
    from vqexplore.hub import resolve

    from .distributed import pick_device
    from .runfacts import default_image_size

    src = resolve(ckpt)
    if batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {batch_size}")
    dev = pick_device(device)
    model = vqexplore.load(src.path, device=dev).eval()
    size = int(size or default_image_size(src, model))
    # Streaming: never decode the whole dataset into memory up front.
    dataset = make_dataset(data, split, size, seed=seed, in_memory=False)
    n = len(dataset) if max_images is None else min(int(max_images), len(dataset))
    if n == 0:
        raise DataError(f"{data} has no {split} images to tokenize")
    if size % model.downsample:
        raise DataError(f"--size {size} is not a multiple of {model.downsample}, the model's downsampling")
    ids = image_ids(dataset)[:n]
    index = _index(src, ckpt, model, data, split, size, seed, ids)
    out = Path(out)
    opened = _open_output(out, index, ids)
    if opened is None:  # already complete
        print(f"{out}: already complete ({n} images)", file=sys.stderr)
        old = json.loads((out / INDEX_NAME).read_text())
        return {k: v for k, v in old.items() if k != "image_ids"} | {"seconds": 0.0, "images_per_second": None}
    tokens, done = opened
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, range(done, n)), batch_size=batch_size, shuffle=False,
        num_workers=max(0, int(workers)), pin_memory=dev.type == "cuda",
        persistent_workers=False, prefetch_factor=4 if workers > 0 else None)
    start = time.perf_counter()
    written = _encode_into(tokens, model, loader, dev, out, done, n, progress)
    seconds = time.perf_counter() - start
    index["complete"] = True
    write_atomic(out / INDEX_NAME, json.dumps({**index, "image_ids": ids}) + "\n")
    (out / PROGRESS_NAME).unlink(missing_ok=True)
    rate = (written - done) / seconds if seconds > 0 else math.inf
    return {**index, "seconds": seconds, "images_per_second": rate}


def _index(src, ckpt: str, model, data: str, split: str, size: int, seed: int, ids: list[str]) -> dict:
    """What the tokens will be (index.json without its image ids)."""
    from vqexplore.data import describe_source
    from vqexplore.projection import weights_fingerprint

    grid = [size // model.downsample] * 2
    return {
        "format": FORMAT, "checkpoint": str(ckpt), "checkpoint_sha256": weights_fingerprint(src.path),
        "config": model.config, "codebook_size": model.codebook_size, "grid": grid,
        "dtype": _dtype(model.codebook_size).name, "num_images": len(ids), "data": str(data),
        "data_description": describe_source(data), "split": split, "size": size, "seed": seed,
        "tokens": TOKENS_NAME, "image_ids_sha256": _ids_digest(ids), "complete": False,
    }


def _open_output(out: Path, index: dict, ids: list[str]):
    """The (N, h, w) token memory map and how many rows are already final (a resumed job), or
    None when ``out`` holds this job complete. A folder of another job is refused."""
    tokens_path, index_path = out / TOKENS_NAME, out / INDEX_NAME
    n, grid, dtype = index["num_images"], index["grid"], np.dtype(index["dtype"])
    done = 0
    if index_path.is_file():
        try:
            old = json.loads(index_path.read_text())
        except (OSError, ValueError):
            raise CheckpointError(f"{index_path} is not readable JSON; delete {out} or choose another --out") from None
        field = _same_job(old, index)
        if field is not None:
            raise CheckpointError(f"{out} holds tokens of another job ({field} differs: {old.get(field)!r} there, "
                                  f"{index[field]!r} now); choose another --out or delete it")
        if old.get("complete"):
            return None
        done = min(_progress(out), n) if tokens_path.is_file() else 0
    elif out.exists() and any(out.iterdir()):
        raise CheckpointError(f"--out {out} exists and holds other files; choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    if done == 0:
        write_atomic(index_path, json.dumps({**index, "image_ids": ids}) + "\n")
        tokens = np.lib.format.open_memmap(tokens_path, mode="w+", dtype=dtype, shape=(n, *grid))
        write_atomic(out / PROGRESS_NAME, json.dumps({"done": 0}) + "\n")
        return tokens, 0
    tokens = np.load(tokens_path, mmap_mode="r+")
    if tokens.shape != (n, *grid) or tokens.dtype != dtype:
        raise CheckpointError(f"{tokens_path} has shape {tokens.shape} {tokens.dtype}, expected {(n, *grid)} "
                              f"{dtype}; delete {out} and tokenize again")
    print(f"{out}: resuming after {done} of {n} images", file=sys.stderr)
    return tokens, done


def _encode_into(tokens: np.ndarray, model, loader, dev, out: Path, done: int, n: int, progress: bool) -> int:
    """Encode every batch into rows ``done``.. of ``tokens``; progress.json counts only rows that
    are flushed to disk. Returns the number of final rows."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, initial=done, unit="img", desc="tokenize", file=sys.stderr, dynamic_ncols=True,
                   mininterval=1.0)
    written, last_save = done, time.monotonic()
    try:
        with torch.inference_mode():
            for batch in _clean_errors(loader):
                ids_batch = model.encode(batch.to(dev, non_blocking=True))
                b = ids_batch.shape[0]
                tokens[written:written + b] = ids_batch.to("cpu", torch.int32).numpy().astype(tokens.dtype, copy=False)
                written += b
                if bar is not None:
                    bar.update(b)
                if time.monotonic() - last_save >= CHECKPOINT_SECONDS:
                    tokens.flush()  # rows on disk before they are counted
                    write_atomic(out / PROGRESS_NAME, json.dumps({"done": written}) + "\n")
                    last_save = time.monotonic()
    finally:
        tokens.flush()
        write_atomic(out / PROGRESS_NAME, json.dumps({"done": written}) + "\n")
        if bar is not None:
            bar.close()
    return written


def _clean_errors(loader):
    """Iterate ``loader``; a user error raised in a DataLoader worker (a bad image file) comes
    back as the same error with its own one-line message, not a worker traceback."""
    from vqexplore.errors import VQExploreError

    try:
        yield from loader
    except VQExploreError as e:
        text = str(e).strip().splitlines()
        if len(text) > 1 and "Traceback" in str(e):  # torch's ExceptionWrapper message
            last = text[-1]
            raise type(e)(last.split(": ", 1)[1] if ": " in last else last) from None
        raise


def read_tokens(out: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """(read-only memory-mapped (N, h, w) tokens, index with ``image_ids``) of a tokenize folder."""
    out = Path(out)
    try:
        index = json.loads((out / INDEX_NAME).read_text())
    except (OSError, ValueError):
        raise DataError(f"{out} has no readable {INDEX_NAME}; run `python -m trainer tokenize` into it") from None
    if not index.get("complete"):
        raise DataError(f"{out} is incomplete; rerun the same `python -m trainer tokenize` command to finish it")
    return np.load(out / index.get("tokens", TOKENS_NAME), mmap_mode="r"), index
