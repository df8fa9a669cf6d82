"""The evaluation protocol: which images a number is measured on, and how.

Every number vqexplore shows about a checkpoint (usage, perplexity, dead codes, PSNR, SSIM, LPIPS,
rFID, bits per image and per pixel) is computed under one :class:`Protocol`: a frozen, hashable
value naming the data source, the split, the image side, the crop, how many images and which
metrics. ``protocol.key`` is a stable short hash of it (the same in every process and on every
machine), ``protocol.describe()`` one line a page header or a table caption can show, and
``protocol.as_dict()`` what ``metrics.json`` records.

    from vqexplore.protocol import Protocol, evaluate_protocol, cached_evaluation

    p = Protocol.heldout_photos()                    # the photo corpus's 8 held-out photos at 64 px
    result = evaluate_protocol(model, p)              # ProtocolResult: .metrics (dict), .counts (K,)
    result = cached_evaluation("checkpoints/vq-4096", model, p)   # the same, kept on disk

Constructors: :meth:`Protocol.builtin` (the built-in photos' fixed validation crops),
:meth:`Protocol.heldout_photos` (the photo corpus's held-out photos, centre-cropped),
:meth:`Protocol.folder`, :meth:`Protocol.hf` (``hf:<dataset>``), :meth:`Protocol.imagenet64`
(Downsampled ImageNet val), and :meth:`Protocol.for_source` for any source name
``vqexplore.data.make_dataset`` takes. Images come from ``vqexplore.data`` (no loader of its own).

The default protocol (:meth:`Protocol.default`: the held-out photos) is measured once per checkpoint:
``trainer export`` and ``trainer eval`` store it beside the checkpoint (:func:`store_evaluation`,
``CheckpointFiles.evaluation``, with the weights' sha256), and :func:`cached_evaluation` reads it from
there (a stale or unreadable file is ignored and the numbers measured again).

``usage_scales``: codebook usage needs many tokens (8 photos at 64 px are 2,048 tokens, fewer than a
4,096-code codebook has codes), so a protocol may count usage over the same images encoded whole at
several shorter sides (e.g. 64, 128, 256, 512 px), the way the demo tokenizes larger uploads. PSNR and
SSIM are always measured on the ``size`` x ``size`` items.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from .errors import ConfigError, DataError
from .runlayout import CheckpointFiles
from .utils import cache_dir, write_atomic

if TYPE_CHECKING:  # torch is imported where images are measured: a stored result is read without it
    import torch
    from torch import Tensor, nn

__all__ = ["Protocol", "ProtocolResult", "METRICS", "DEFAULT_METRICS", "HELDOUT_USAGE_SCALES",
           "evaluate_protocol", "cached_evaluation", "protocol_of_metrics", "bits_per_image", "weights_hash",
           "store_evaluation", "stored_evaluation"]

METRICS = ("usage", "psnr", "ssim", "lpips", "rfid")
"""Metric groups a protocol can ask for: "usage" (usage, perplexity, dead codes, normalised entropy,
bits), "psnr", "ssim", "lpips" and "rfid" (these two need their pretrained weights)."""
DEFAULT_METRICS = ("usage", "psnr", "ssim")
HELDOUT_USAGE_SCALES = (64, 128, 256, 512)
"""Shorter sides at which the held-out photos are encoded whole to count codebook usage."""
CROPS = {"center": "shorter side resized to the size, centre crop",
         "crops": "fixed crops at 1.5-4x the size"}
_VERSION = 1  # bump when what a protocol measures changes, so old cached results are not reused


def _source_kind(source: str) -> str:
    from .data.sources import _resolve

    return _resolve(source)[0]


@dataclass(frozen=True)
class Protocol:
    """How a checkpoint is measured (frozen and hashable: usable as a cache key).

    source: a ``vqexplore.data`` source ("builtin", "photos", a folder, Downsampled ImageNet files,
        "hf:<dataset>"); split: "val" (default) or "train" (the train split's first items of epoch 0,
        seed 0); size: side of the square items in pixels (a multiple of 4); crop: "crops" (the
        built-in photos' fixed multi-scale crops, their validation split) or "center" (each image's
        shorter side resized to ``size``, centre crop: every other source); count: how many images
        (the split's first ``count``; None = all); metrics: groups of :data:`METRICS`;
        usage_scales: shorter sides at which the same images are encoded whole to count usage
        (empty: usage on the ``size`` items).
    """

    source: str = "photos"
    split: str = "val"
    size: int = 64
    crop: str = "center"
    count: int | None = None
    metrics: tuple[str, ...] = DEFAULT_METRICS
    usage_scales: tuple[int, ...] = field(default=())

    def __post_init__(self):
        source = str(self.source).strip()
        object.__setattr__(self, "source", source.lower() if source.lower() in ("builtin", "photos") else source)
        split = str(self.split).lower()
        object.__setattr__(self, "split", "val" if split in ("val", "valid", "validation") else split)
        if self.split not in ("val", "train"):
            raise ConfigError(f"protocol split must be 'val' or 'train', got {self.split!r}")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 4 or self.size % 4:
            raise ConfigError(f"protocol size must be a multiple of 4 (the tokenizers downsample by 4), "
                              f"got {self.size!r}")
        if self.crop not in CROPS:
            raise ConfigError(f"protocol crop must be one of {', '.join(CROPS)}, got {self.crop!r}")
        if self.crop == "crops" and self.source != "builtin":
            raise ConfigError("crop 'crops' (fixed multi-scale crops) exists for the built-in photos only; "
                              "use crop 'center' for other sources")
        if self.count is not None and (not isinstance(self.count, int) or isinstance(self.count, bool)
                                       or self.count < 1):
            raise ConfigError(f"protocol count must be a positive number of images or None (all), got {self.count!r}")
        metrics = tuple(dict.fromkeys(str(m).lower() for m in self.metrics))
        unknown = [m for m in metrics if m not in METRICS]
        if unknown or not metrics:
            raise ConfigError(f"unknown protocol metric(s) {', '.join(unknown) or '(none given)'}; "
                              f"choose from {', '.join(METRICS)}")
        object.__setattr__(self, "metrics", tuple(m for m in METRICS if m in metrics))
        scales = tuple(sorted({int(s) for s in self.usage_scales}))
        if any(s < 4 for s in scales):
            raise ConfigError(f"usage scales must be shorter sides of at least 4 pixels, got {self.usage_scales}")
        object.__setattr__(self, "usage_scales", scales)

    # --- constructors ---------------------------------------------------------------------------

    @classmethod
    def default(cls, size: int = 64) -> "Protocol":
        """The protocol the apps open on: :meth:`heldout_photos` at ``size`` (a checkpoint's training
        resolution; 64 for the study's), usage over the photos whole at 64-512 px. ``trainer export``
        and ``trainer eval`` store a checkpoint's numbers under it (:func:`store_evaluation`)."""
        return cls.heldout_photos(size)

    @classmethod
    def builtin(cls, size: int = 64, count: int | None = 64, **kw) -> "Protocol":
        """The built-in photos' fixed validation crops (2 held-out photos, 256 crops at 4 scales)."""
        return cls("builtin", "val", size, "crops", count, **kw)

    @classmethod
    def heldout_photos(cls, size: int = 64, count: int | None = None,
                       usage_scales: tuple[int, ...] = HELDOUT_USAGE_SCALES, **kw) -> "Protocol":
        """The photo corpus's 8 held-out photos, each resized to shorter side ``size`` and centre-cropped
        (what the demo does with an upload in its 64 mode); usage over the photos whole at ``usage_scales``."""
        return cls("photos", "val", size, "center", count, usage_scales=usage_scales, **kw)

    @classmethod
    def folder(cls, path: str | os.PathLike, size: int = 64, count: int | None = 256, **kw) -> "Protocol":
        """A folder of images (ImageNet layout: its val/; any other folder: the images held out by path hash)."""
        return cls(str(path), "val", size, "center", count, **kw)

    @classmethod
    def hf(cls, name: str, size: int = 64, count: int | None = 256, **kw) -> "Protocol":
        """A Hugging Face dataset: ``name`` is "hf:<id or saved path>[:<split>]" or the bare id."""
        return cls(name if str(name).startswith("hf:") else f"hf:{name}", "val", size, "center", count, **kw)

    @classmethod
    def imagenet64(cls, path: str | os.PathLike, size: int = 64, count: int | None = 1000, **kw) -> "Protocol":
        """The official Downsampled ImageNet 64x64 files' val_data (a folder of them or the file)."""
        return cls(str(path), "val", size, "center", count, **kw)

    @classmethod
    def for_source(cls, source: str | os.PathLike, size: int = 64, count: int | None = None, **kw) -> "Protocol":
        """The natural protocol of any data source name (what ``trainer eval`` uses for a run's data.val)."""
        source = str(source)
        if source.strip().lower() == "builtin":
            return cls.builtin(size, count if count is not None else 256, **kw)
        if source.strip().lower() == "photos":
            return cls.heldout_photos(size, count, **kw)
        return cls(source, "val", size, "center", count, **kw)

    # --- identity -------------------------------------------------------------------------------

    def as_dict(self) -> dict:
        d = asdict(self)
        d["metrics"], d["usage_scales"] = list(self.metrics), list(self.usage_scales)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Protocol":
        known = {k: d[k] for k in ("source", "split", "size", "crop", "count", "metrics", "usage_scales") if k in d}
        known["metrics"] = tuple(known.get("metrics") or DEFAULT_METRICS)
        known["usage_scales"] = tuple(known.get("usage_scales") or ())
        return cls(**known)

    @property
    def key(self) -> str:
        """A stable 12-hex-digit hash of which images are measured and how (every field but ``metrics``,
        which only choose the numbers reported): equal keys, equal numbers, in any process. ``trainer
        eval`` (which adds LPIPS and rFID) and the dashboard name the same protocol by the same key."""
        text = json.dumps({"v": _VERSION, **{k: v for k, v in self.as_dict().items() if k != "metrics"}},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def data_key(self) -> str:
        """Alias of :attr:`key` (the images alone)."""
        return self.key

    @property
    def usage_key(self) -> str:
        """The key of the part usage depends on when ``usage_scales`` is set (not ``size`` or the crop)."""
        text = json.dumps({"v": _VERSION, "source": self.source, "split": self.split, "count": self.count,
                           "usage_scales": list(self.usage_scales)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def source_label(self) -> str:
        if self.source == "builtin":
            return "built-in photos (2 held-out photos)"
        if self.source == "photos":
            return "photo corpus, held-out photos"
        if self.source.startswith("hf:"):
            return f"Hugging Face {self.source[3:]}"
        kind = _source_kind_or_none(self.source)
        return f"Downsampled ImageNet {self.source}" if kind == "imagenet64" else f"folder {self.source}"

    def describe(self) -> str:
        """One line: ``photo corpus, held-out photos · val · all images · 64 px centre crop · usage over
        the photos whole at 64-512 px · usage, PSNR, SSIM · protocol 1a2b3c4d5e6f``."""
        count = "all images" if self.count is None else f"{self.count:,} image{'s' if self.count != 1 else ''}"
        crop = "centre crop" if self.crop == "center" else "fixed crops at 1.5-4x"
        usage = (f" · usage over the images whole at {'/'.join(str(s) for s in self.usage_scales)} px"
                 if self.usage_scales else "")
        names = {"usage": "usage", "psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "rfid": "rFID"}
        return (f"{self.source_label()} · {self.split} · {count} · {self.size} px {crop}{usage} · "
                f"{', '.join(names[m] for m in self.metrics)} · protocol {self.key}")

    # --- images ---------------------------------------------------------------------------------

    def dataset(self):
        """The ``vqexplore.data`` dataset the items come from (``torch.utils.data.Dataset``)."""
        from .data import make_dataset

        if self.source == "builtin" and self.crop == "center":
            return _CenterCrops([a for _, a in _builtin_arrays(self.split)], self.size)
        in_memory = None if _source_kind(self.source) == "imagenet64" else False
        return make_dataset(self.source, self.split, self.size, in_memory=in_memory)

    def num_images(self) -> int:
        n = len(self.dataset())
        if n == 0:
            raise DataError(f"{self.source} has no {self.split} images; choose another source or split")
        return n if self.count is None else min(self.count, n)

    def images(self) -> Tensor:
        """All items at once: float32 (n, 3, size, size) in [-1, 1] (small protocols: the dashboard's)."""
        import torch

        return torch.cat(list(self.batches(256)))

    def batches(self, batch_size: int = 64, workers: int = 0) -> Iterator[Tensor]:
        """The items in order, ``batch_size`` at a time: float32 (b, 3, size, size) in [-1, 1];
        ``workers`` DataLoader processes decode them (0: in this process)."""
        import torch

        ds = self.dataset()
        n = len(ds) if self.count is None else min(self.count, len(ds))
        if n == 0:
            raise DataError(f"{self.source} has no {self.split} images; choose another source or split")
        subset = torch.utils.data.Subset(ds, range(n))
        yield from torch.utils.data.DataLoader(subset, batch_size=batch_size, num_workers=workers)

    def whole_images(self) -> list[np.ndarray]:
        """The images the items are cut from, uint8 (H, W, 3) (for ``usage_scales``)."""
        if self.source in ("builtin", "photos"):
            arrays = [a for _, a in (_builtin_arrays(self.split) if self.source == "builtin"
                                     else _photo_arrays(self.split))]
            return arrays if self.count is None else arrays[:self.count]
        ds = self.dataset()
        if not hasattr(ds, "path"):
            raise DataError(f"usage over whole images needs the built-in photos, the photo corpus or an image "
                            f"folder, not {self.source}; drop the usage scales")
        from .data import load_image

        n = len(ds) if self.count is None else min(self.count, len(ds))
        return [load_image(ds.path(i)) for i in range(n)]


def _source_kind_or_none(source: str) -> str | None:
    try:
        return _source_kind(source)
    except DataError:
        return None


def _builtin_arrays(split: str):
    from .data import builtin_photos

    return builtin_photos(split)


def _photo_arrays(split: str):
    from .data import photo_arrays

    return photo_arrays(split)


class _CenterCrops:
    """Whole photos, each resized to shorter side ``size`` and centre-cropped (the built-in photos' "center")."""

    def __init__(self, arrays: list[np.ndarray], size: int):
        self.arrays, self.size = arrays, size

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int) -> Tensor:
        from .data import center_crop, image_to_tensor

        return image_to_tensor(center_crop(self.arrays[i], self.size))


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

@dataclass
class ProtocolResult:
    """A checkpoint measured under a protocol.

    metrics: JSON-able dict: ``usage`` (fraction), ``perplexity``, ``dead_codes``, ``normalized_entropy``,
    ``codebook_size``, ``usage_tokens`` (tokens usage was counted on), ``psnr`` (dB), ``ssim``, ``lpips`` /
    ``rfid`` (None when not asked for or without weights), ``num_images``, ``image_size``, ``tokens_per_image``,
    ``bits_per_image_fixed`` / ``bits_per_image_entropy`` and ``bits_per_pixel_fixed`` /
    ``bits_per_pixel_entropy``, ``protocol`` (:meth:`Protocol.as_dict`) and ``protocol_key``.
    counts: (K,) int64 code counts usage was computed from. from_cache: read from disk.
    """

    metrics: dict
    counts: np.ndarray
    from_cache: bool = False


def bits_per_image(counts: np.ndarray, codebook_size: int, tokens: int, pixels: int) -> dict:
    """Bits per image and per pixel: fixed (tokens x log2 K) and entropy (tokens x H of ``counts``)."""
    from .ratedistortion import entropy_bits

    fixed = tokens * math.log2(codebook_size)
    entropy = tokens * entropy_bits(counts) if np.asarray(counts).sum() > 0 else float("nan")
    return {"bits_per_image_fixed": fixed, "bits_per_image_entropy": entropy,
            "bits_per_pixel_fixed": fixed / pixels, "bits_per_pixel_entropy": entropy / pixels}


def _scale_counts(model: nn.Module, protocol: Protocol) -> tuple[np.ndarray, int]:
    """(K,) counts and the number of tokens of the protocol's whole images at its usage scales."""
    import torch

    from .data import fit_to_multiple, image_to_tensor
    from .data.decode import _resize_shorter
    from .metrics import code_counts
    from .utils import eval_mode

    device = next(model.parameters()).device
    counts = torch.zeros(model.codebook_size, dtype=torch.long)
    tokens = 0
    with torch.no_grad(), eval_mode(model):
        for photo in protocol.whole_images():
            for side in protocol.usage_scales:
                img = fit_to_multiple(_resize_shorter(photo, side), 4)
                ids = model.encode(image_to_tensor(img)[None].to(device)).cpu()
                counts += code_counts(ids.flatten(), model.codebook_size)
                tokens += ids.numel()
    return counts.numpy().astype(np.int64), tokens


def evaluate_protocol(model: nn.Module, protocol: Protocol, *, lpips=None, rfid=None, batch_size: int = 64,
                      device: str | torch.device | None = None, counts: np.ndarray | None = None,
                      workers: int = 0, images: Tensor | None = None) -> ProtocolResult:
    """Measure ``model`` under ``protocol`` (see :class:`ProtocolResult` for what comes back).

    lpips / rfid: ``vqexplore.metrics.LPIPS`` / ``RFID`` objects, used when the protocol asks for them
    (None: that metric is None). counts: usage counts already computed under ``protocol.usage_key``
    (the usage-scale pass is then skipped). images: ``protocol.images()`` when the caller holds them
    already (several checkpoints measured on the same images decode them once).
    """
    import torch

    from .encoding import usage_stats
    from .metrics import evaluate

    device = torch.device(device) if device is not None else next(model.parameters()).device
    want = set(protocol.metrics)
    batches = protocol.batches(batch_size, workers) if images is None else \
        (images[i:i + batch_size] for i in range(0, images.shape[0], batch_size))
    measured, item_counts = evaluate(model, batches, device=device,
                                     lpips=lpips if "lpips" in want else None,
                                     rfid=rfid if "rfid" in want else None, return_counts=True)
    item_counts = item_counts.numpy().astype(np.int64)
    tokens_per_image = int(item_counts.sum()) // max(1, int(measured["num_images"]))
    if protocol.usage_scales:
        if counts is None:
            counts, usage_tokens = _scale_counts(model, protocol)
        else:
            usage_tokens = int(np.asarray(counts).sum())
    else:
        counts, usage_tokens = item_counts, int(item_counts.sum())
    counts = np.asarray(counts, dtype=np.int64)
    stats = usage_stats(counts).as_dict()
    k = int(model.codebook_size)
    metrics = {**stats, "codebook_size": k, "usage_tokens": usage_tokens,
               "psnr": measured["psnr"] if "psnr" in want else None,
               "ssim": measured["ssim"] if "ssim" in want else None,
               "lpips": measured.get("lpips"), "rfid": measured.get("rfid"),
               "num_images": int(measured["num_images"]), "image_size": protocol.size,
               "tokens_per_image": tokens_per_image,
               **bits_per_image(counts, k, tokens_per_image, protocol.size * protocol.size),
               "protocol": protocol.as_dict(), "protocol_key": protocol.key,
               "protocol_description": protocol.describe()}
    if "usage" not in want:
        for key in ("usage", "perplexity", "dead_codes", "normalized_entropy"):
            metrics[key] = None
    return ProtocolResult(metrics, counts)


def weights_hash(checkpoint_dir: str | Path) -> str:
    """sha256 of a checkpoint folder's model.safetensors (remembered per path, size and mtime)."""
    from .projection import weights_fingerprint

    return weights_fingerprint(checkpoint_dir)


def _cache_paths(folder: Path, weights: str, key: str) -> tuple[Path, Path]:
    stem = f"{weights[:24]}-{key}"
    return folder / f"{stem}.json", folder / f"{stem}.counts.npy"


def _read_cached(folder: Path, weights: str, key: str) -> tuple[dict, np.ndarray] | None:
    meta_path, counts_path = _cache_paths(folder, weights, key)
    try:
        meta = json.loads(meta_path.read_text())
        counts = np.load(counts_path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return meta, counts.astype(np.int64)


def _write_cached(folder: Path, weights: str, key: str, meta: dict, counts: np.ndarray) -> None:
    meta_path, counts_path = _cache_paths(folder, weights, key)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(counts_path, lambda f: np.save(f, np.asarray(counts, dtype=np.int64), allow_pickle=False),
                     durable=False)
        write_atomic(meta_path, json.dumps(meta), durable=False)
    except OSError:
        pass  # an unwritable cache only means recomputing next time


def protocol_of_metrics(metrics: dict | None) -> Protocol | None:
    """The protocol a ``metrics.json`` was measured under (None for one written before protocols)."""
    if not metrics or not isinstance(metrics.get("protocol"), dict):
        return None
    try:
        return Protocol.from_dict(metrics["protocol"])
    except (ConfigError, TypeError, ValueError):
        return None


_STORED_VERSION = 1
_STORED_NUMBERS = ("codebook_size", "num_images", "usage_tokens", "tokens_per_image")  # what readers rely on


def store_evaluation(checkpoint_dir: str | Path, result: ProtocolResult) -> Path:
    """Write ``result`` (its metrics, protocol and per-code counts) beside the checkpoint
    (``CheckpointFiles.evaluation``) with the sha256 of its weights, so that every later reader
    (:func:`cached_evaluation`: the dashboard, the demo) takes it instead of measuring."""
    meta = {"v": _STORED_VERSION, "weights_sha256": weights_hash(checkpoint_dir),
            "metrics": {k: v for k, v in result.metrics.items() if k != "code_counts"}}
    counts = np.asarray(result.counts, dtype=np.int64)
    path = CheckpointFiles(checkpoint_dir).evaluation
    write_atomic(path, lambda f: np.savez(f, counts=counts, meta=np.array(json.dumps(meta))))
    return path


def stored_evaluation(checkpoint_dir: str | Path) -> tuple[Protocol, dict, np.ndarray] | None:
    """(protocol, metrics, counts) stored beside the checkpoint by :func:`store_evaluation`, when they
    were measured on these very weights (sha256); None when missing, stale or unreadable."""
    path = CheckpointFiles(checkpoint_dir).evaluation
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            counts = np.asarray(f["counts"])
        metrics = meta["metrics"]
        if (meta.get("v") != _STORED_VERSION or meta.get("weights_sha256") != weights_hash(checkpoint_dir)
                or not isinstance(metrics, dict) or counts.ndim != 1 or counts.dtype.kind not in "iu"
                or counts.size != metrics.get("codebook_size") or (counts < 0).any()
                or not all(isinstance(metrics.get(k), (int, float)) for k in _STORED_NUMBERS)):
            return None
        protocol = protocol_of_metrics(metrics)
        if protocol is None:
            return None
        return protocol, metrics, counts.astype(np.int64)
    except Exception:  # a truncated or foreign file, a missing key: measured again
        return None


def cached_evaluation(checkpoint_dir: str | Path, model, protocol: Protocol, *, lpips=None, rfid=None,
                      cache: Path | None = None, batch_size: int = 64, workers: int = 0,
                      images=None, measure: bool = True) -> ProtocolResult | None:
    """:func:`evaluate_protocol`, kept on disk per (sha256 of the weights, protocol key).

    model: the checkpoint's model, or a function of no arguments returning it (called only when
    something has to be measured: a result on disk or in metrics.json needs no model at all); images:
    the protocol's images, or a function returning them, likewise (see :func:`evaluate_protocol`).

    A second call in any process reads the result back (``from_cache=True``). What was measured on
    these weights already counts as cached too: the evaluation stored beside the checkpoint
    (:func:`store_evaluation`) and a ``metrics.json`` that ``trainer eval`` wrote, each under the same
    protocol (their usage counts also serve a protocol that differs only in size or crop). The usage counts of a
    protocol with ``usage_scales`` are kept apart, per ``usage_key``, so changing only the size
    re-measures PSNR / SSIM but not usage. LPIPS / rFID asked for but not given (no
    weights) are None and such a result is kept as well; with the metric module it is measured again.
    ``measure=False``: only what is on disk (None when nothing is; the model is never loaded).
    """
    from .hub import read_metrics

    folder = (cache or cache_dir()) / "evaluations"
    weights = weights_hash(checkpoint_dir)
    key = f"{protocol.key}-{'+'.join(protocol.metrics)}" \
        + ("-lpips" if lpips is not None and "lpips" in protocol.metrics else "") \
        + ("-rfid" if rfid is not None and "rfid" in protocol.metrics else "")
    hit = _read_cached(folder, weights, key)
    if hit is not None:
        return ProtocolResult(hit[0], hit[1], from_cache=True)
    # What was measured on these weights already: the stored default protocol, then eval's metrics.json.
    measured = []
    stored = stored_evaluation(checkpoint_dir)
    if stored is not None:
        measured.append(stored)
    saved = read_metrics(checkpoint_dir) or {}
    saved_protocol = protocol_of_metrics(saved)
    if (saved_protocol is not None and saved.get("weights_sha256") == weights
            and isinstance(saved.get("code_counts"), list) and len(saved["code_counts"]) == saved.get("codebook_size")):
        measured.append((saved_protocol, saved, np.asarray(saved["code_counts"], dtype=np.int64)))
    for done_protocol, done, counts in measured:
        if (done_protocol.data_key == protocol.data_key and set(protocol.metrics) <= set(done_protocol.metrics)
                and (lpips is None or "lpips" not in protocol.metrics or done.get("lpips") is not None)):
            meta = {k: v for k, v in done.items() if k != "code_counts"}
            for group in ("lpips", "rfid", "psnr", "ssim"):
                if group not in protocol.metrics:
                    meta[group] = None
            meta.update(protocol=protocol.as_dict(), protocol_key=protocol.key,
                        protocol_description=protocol.describe())
            if done is saved:
                _write_cached(folder, weights, key, meta, counts)
            return ProtocolResult(meta, counts, from_cache=True)
    if not measure:
        return None
    usage_counts = None
    if protocol.usage_scales and "usage" in protocol.metrics:
        hit_usage = _read_cached(folder, weights, "usage-" + protocol.usage_key)
        usage_counts = hit_usage[1] if hit_usage is not None else None
        for done_protocol, _, counts in measured:
            if usage_counts is None and done_protocol.usage_key == protocol.usage_key:
                usage_counts = counts
    from torch import Tensor, nn

    if not isinstance(model, nn.Module):
        model = model()
    if images is not None and not isinstance(images, Tensor):
        images = images()
    result = evaluate_protocol(model, protocol, lpips=lpips, rfid=rfid, batch_size=batch_size, counts=usage_counts,
                               workers=workers, images=images)
    if protocol.usage_scales and usage_counts is None:
        _write_cached(folder, weights, "usage-" + protocol.usage_key, {"usage_tokens": result.metrics["usage_tokens"]},
                      result.counts)
    _write_cached(folder, weights, key, result.metrics, result.counts)
    return result
