"""Images in, tensors out: robust image decoding, built-in photos, datasets and loaders.

Tensors are float32 ``(3, H, W)`` (or batched ``(B, 3, H, W)``) in ``[-1, 1]``; numpy images are
uint8 ``(H, W, 3)`` RGB.

Image decoding (``load_image``)
    Accepts a path, bytes, a binary file-like, a ``PIL.Image`` or a numpy array and always returns
    uint8 ``(H, W, 3)``. EXIF orientation is applied. Transparent pixels (RGBA, LA, palette or
    colour-key transparency) are composited onto **white**, which is what a viewer shows on a
    white page; the tokenizer has no alpha channel. 16-bit images are scaled (65535 -> 255), not
    clipped. Only raster formats are opened (JPEG, PNG, WebP, GIF, BMP, TIFF, ...; never EPS,
    which would run Ghostscript). An image larger than ``max_pixels`` (default ``MAX_PIXELS``,
    40 megapixels) is refused from its header, before decoding. PIL's own decompression-bomb
    limit (``PIL.Image.MAX_IMAGE_PIXELS``) is left untouched and also applies; its errors become
    ``ImageError``. Every failure is an ``ImageError`` with one sentence saying what to do.

Built-in photos (``source="builtin"``)
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

General sources (``make_dataset``)
    * ``"builtin"``: ``BuiltinPhotos``.
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
    * The official "Downsampled ImageNet" files (``train_data_batch_1..10`` and ``val_data``,
      64x64, also the 32x32/16x16 ones: the side is read from the data), a folder holding them
      (or in its direct subfolders) or one such file (then it is used for whichever split is asked).
      Both the ``.npz`` variant (``np.load``, ``allow_pickle=False``) and the pickled original
      (read with a restricted unpickler that only rebuilds numpy arrays) are read. Images are
      rows of 3 * s * s uint8 (R, G, B planes). Train: random horizontal flip (the images are
      already s x s; no crop); ``size != s`` resizes. Storage: in RAM when all the split's files
      fit ``IN_MEMORY_BUDGET`` (val: 50k images, 614 MB), else memory-mapped: an uncompressed
      ``.npz`` member is mapped in place; pickles and compressed ``.npz`` files are converted once,
      file by file, into ``.npy`` files under ``$VQEXPLORE_CACHE`` (default
      ``~/.cache/vqexplore``) and mapped. Memory mapping keeps a *global* shuffle cheap (the page
      cache is shared by all loader workers and ranks on a node) where per-file lazy loading would
      either thrash or restrict shuffling to within one file.
    * ``"hf:<repo id or local path>"`` or ``"hf:<name>:<split>"``: a Hugging Face ``datasets``
      dataset (``load_from_disk`` for a ``save_to_disk`` folder, else ``load_dataset``). The image
      column is the first ``datasets.Image`` feature, else a column named ``image`` or ``img``.
      Split names: train -> ``train``; val -> the first of ``validation``, ``val``, ``valid``,
      ``test``. A dataset with a single split gives val every 20th example (index % 20 == 0) and
      train the rest. Offline with a repo id (and ``HF_HUB_OFFLINE`` unset) is one ``DataError``.
    * Anything else: ``DataError`` naming the path and what to do.

    ``in_memory=None`` decodes everything once at construction (in threads) and keeps uint8 in
    RAM when the estimate fits ``IN_MEMORY_BUDGET`` (2 GiB); otherwise items are decoded per
    access. Results are identical either way.

Determinism and resuming
    Every random choice of a train item is a pure function of ``(seed, epoch, index)``
    (``np.random.default_rng([seed, epoch, index])``), never the global RNG, so the data do not
    depend on ``num_workers`` or on whether the run was resumed. Set the epoch with
    ``dataset.set_epoch(epoch)`` or, better, through the loader: ``make_loader`` uses an
    ``EpochSampler`` that hands ``(epoch, index)`` keys to the dataset, so ``loader.sampler
    .set_epoch(e)`` reaches persistent workers too (a dataset attribute set in the main process
    would not). The order is ``torch.randperm`` under a generator seeded from ``(seed, epoch)``.

    To resume mid-epoch, the trainer saves the global step; on restart it calls
    ``iter_batches(loader, start_step=step)``, which sets epoch = step // batches_per_epoch and
    starts the sampler ``step % batches_per_epoch`` batches in (``make_loader(..., start_batch=k)``
    does the same for one epoch): skipped items are never decoded, and the batches that follow are
    exactly those an uninterrupted run would have seen.
"""
from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import io
import logging
import math
import operator
import os
import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .errors import DataError, ImageError

log = logging.getLogger(__name__)

__all__ = [
    "MAX_PIXELS", "FIT_MAX_PIXELS", "IN_MEMORY_BUDGET", "IMAGE_EXTENSIONS",
    "BUILTIN_TRAIN_PHOTOS", "BUILTIN_VAL_PHOTOS",
    "load_image", "image_to_tensor", "tensor_to_image", "center_crop", "fit_to_multiple",
    "builtin_photos", "BuiltinPhotos", "ImageFolderDataset", "DownsampledImageNet", "HFImageDataset",
    "make_dataset", "describe_source", "EpochSampler", "make_loader", "iter_batches",
    "validation_batch",
]

MAX_PIXELS = 40_000_000
"""Default limit of ``load_image``: larger images are refused from their header, before decoding."""

FIT_MAX_PIXELS = 1024 * 1024
"""Default pixel budget of ``fit_to_multiple`` (native-resolution reconstruction in the demo)."""

IN_MEMORY_BUDGET = 2 * 1024 ** 3
"""``in_memory=None`` keeps a decoded dataset in RAM when its uint8 pixels fit in this many bytes."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm")

# Raster formats only: EPS would hand the file to Ghostscript, others are not photos.
_SAFE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "PPM", "TGA", "ICO",
                 "JPEG2000", "AVIF", "QOI", "PCX", "SGI")
_FIX = "upload a JPEG, PNG or WebP"
_RESAMPLE = Image.Resampling.BICUBIC  # antialiased when downscaling (PIL scales the kernel)


# ----------------------------------------------------------------------------------------------
# Image decoding
# ----------------------------------------------------------------------------------------------

class _Problem(Exception):
    """Why an image cannot be used; callers turn it into ImageError or DataError.

    kind: "unreadable" (bad bytes), "too_large", "path" (missing/folder), "type" (not an image
    source at all) or "content" (an array/PIL image with unusable values)."""

    def __init__(self, reason: str, too_large: bool = False, kind: str = "unreadable"):
        super().__init__(reason)
        self.reason = reason
        self.kind = "too_large" if too_large else kind

    @property
    def too_large(self) -> bool:
        return self.kind == "too_large"


def _safe_formats() -> tuple[str, ...]:
    Image.init()
    return tuple(f for f in _SAFE_FORMATS if f in Image.OPEN)


def _mp(pixels: float) -> str:
    return f"{pixels / 1e6:.1f} megapixels"


def _check_pixels(w: int, h: int, max_pixels: int | None) -> None:
    if w <= 0 or h <= 0:
        raise _Problem("it has no pixels")
    if max_pixels is not None and w * h > max_pixels:
        raise _Problem(f"is {w}x{h} pixels ({_mp(w * h)}), more than the limit of {_mp(max_pixels)}",
                       too_large=True)


def _read_reason(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    low = msg.lower()
    if isinstance(e, EOFError) or "truncated" in low or "end of file" in low:
        return "truncated file"
    if "broken" in low:
        return "truncated or corrupt file"
    return f"corrupt data: {msg}"


def _bomb_problem(e: Exception) -> _Problem:
    numbers = [int(n) for n in re.findall(r"\d+", str(e))]
    if len(numbers) >= 2:
        return _Problem(f"declares {_mp(numbers[0])}, more than the limit of {_mp(numbers[1])} "
                        f"(a possible decompression bomb)", too_large=True)
    return _Problem("is too large to decode safely (a possible decompression bomb)", too_large=True)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    rgb = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:4].astype(np.uint32)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _scale16(a: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 with rounding (65535 -> 255, 32768 -> 128)."""
    return ((a.astype(np.uint64) * 255 + 32767) // 65535).astype(np.uint8)


def _gray_to_rgb(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2))


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    """A loaded PIL image of any mode -> uint8 (H, W, 3)."""
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # broken EXIF must not make a readable photo unusable
        orientation = 1
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:
            pass
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im).astype(np.int64)
        a = np.clip(a, 0, None)
        top = int(a.max()) if a.size else 0
        if mode == "I" and top > 65535:  # 32-bit integer data: use its own range
            a = (a * 255 + top // 2) // top
            return _gray_to_rgb(a.astype(np.uint8))
        return _gray_to_rgb(_scale16(a))
    if mode == "F":
        return _array_to_rgb(np.asarray(im, dtype=np.float32), where="image")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        try:
            return _composite_on_white(np.asarray(im.convert("RGBA")))
        except (ValueError, OSError):
            pass  # e.g. a colour key on a mode that cannot carry alpha: ignore the key
    if mode == "RGB":
        return np.array(im, dtype=np.uint8)
    try:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (ValueError, OSError) as e:
        raise _Problem(f"colour mode {mode} cannot be converted to RGB ({e})") from None


def _array_to_rgb(a: np.ndarray, where: str = "array") -> np.ndarray:
    """A numpy image (HxW, HxWx1/2/3/4; uint8, uint16, other ints, bool or float in [0, 1])
    -> uint8 (H, W, 3). Alpha is composited onto white."""
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] in (1, 2, 3, 4):
        pass
    elif a.ndim == 2:
        a = a[..., None]
    else:
        raise _Problem(f"the {where} has shape {tuple(a.shape)}; expected (H, W), (H, W, 1), "
                       f"(H, W, 3) or (H, W, 4)", kind="content")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise _Problem(f"the {where} has no pixels (shape {tuple(a.shape)})", kind="content")
    if a.dtype == np.uint8:
        u8 = a
    elif a.dtype == np.bool_:
        u8 = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        u8 = _scale16(a)
    elif np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise _Problem(f"the integer {where} spans [{lo}, {hi}]; expected 0..255 or 0..65535", kind="content")
        u8 = a.astype(np.uint8) if hi <= 255 else _scale16(a)
    elif np.issubdtype(a.dtype, np.floating):
        f = a.astype(np.float32)
        if not np.isfinite(f).all():
            raise _Problem(f"the float {where} holds NaN or infinite values", kind="content")
        lo, hi = float(f.min()), float(f.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise _Problem(f"the float {where} spans [{lo:.3g}, {hi:.3g}]; float images must hold "
                           f"values in [0, 1]", kind="content")
        u8 = np.round(np.clip(f, 0, 1) * 255).astype(np.uint8)
    else:
        raise _Problem(f"the {where} has dtype {a.dtype}; expected uint8, uint16 or float in [0, 1]", kind="content")
    c = u8.shape[2]
    if c == 1:
        return _gray_to_rgb(u8[..., 0])
    if c == 2:
        return _composite_on_white(np.concatenate([np.repeat(u8[..., :1], 3, axis=2), u8[..., 1:]], axis=2))
    if c == 4:
        return _composite_on_white(u8)
    return np.array(u8, order="C", copy=True)  # never alias the caller's array


def _decode(fp: Any, *, max_pixels: int | None, draft: int | None = None) -> np.ndarray:
    """Open (path or binary file object), check the declared size, decode -> uint8 (H, W, 3).

    ``draft``: let libjpeg decode at 1/2, 1/4 or 1/8 scale as long as both sides stay >= draft."""
    try:
        im = Image.open(fp, formats=_safe_formats())
    except Image.DecompressionBombError as e:
        raise _bomb_problem(e) from None
    except Image.UnidentifiedImageError:
        raise _Problem("unrecognised format") from None
    except Exception as e:
        raise _Problem(_read_reason(e)) from None
    with im:
        _check_pixels(im.width, im.height, max_pixels)
        if draft:
            try:
                im.draft(None, (draft, draft))
            except Exception:
                pass
        try:
            im.seek(0)
            im.load()
        except Image.DecompressionBombError as e:
            raise _bomb_problem(e) from None
        except Exception as e:
            raise _Problem(_read_reason(e)) from None
        try:
            return _pil_to_rgb(im)
        except _Problem:
            raise
        except Exception as e:  # a decoder that fails lazily during conversion
            raise _Problem(_read_reason(e)) from None


def _source_name(source: Any) -> str:
    if isinstance(source, (np.ndarray, Image.Image)):
        return "the image"
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name or str(source)
    name = getattr(source, "name", None)
    if isinstance(name, (str, os.PathLike)) and str(name):
        return Path(name).name
    return "the uploaded file"


def _load(source: Any, *, max_pixels: int | None, draft: int | None = None) -> np.ndarray:
    """Like load_image but raises _Problem (without the file name)."""
    if isinstance(source, np.ndarray):
        out = _array_to_rgb(source)
        _check_pixels(out.shape[1], out.shape[0], max_pixels)
        return out
    if isinstance(source, torch.Tensor):
        raise _Problem("load_image cannot use a torch tensor; convert (3, H, W) tensors in [-1, 1] with "
                       "tensor_to_image first", kind="type")
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, max_pixels)
        try:
            source.load()
        except Exception as e:
            raise _Problem(_read_reason(e)) from None
        return _pil_to_rgb(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise _Problem("the file does not exist", kind="path")
        if path.is_dir():
            raise _Problem("it is a folder, not an image file", kind="path")
        if path.stat().st_size == 0:
            raise _Problem("empty file")
        with open(path, "rb") as f:
            return _decode(f, max_pixels=max_pixels, draft=draft)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        try:
            if hasattr(source, "seek"):
                source.seek(0)
        except Exception:
            pass
        data = source.read()
        if isinstance(data, str):
            raise _Problem("load_image got a file opened in text mode; open it with 'rb'", kind="type")
    else:
        raise _Problem(f"load_image cannot use a {type(source).__name__}; pass a path, bytes, a binary file, "
                       f"a PIL image or a numpy array", kind="type")
    if not data:
        raise _Problem("empty file")
    return _decode(io.BytesIO(data), max_pixels=max_pixels, draft=draft)


def load_image(source: Any, *, max_pixels: int | None = MAX_PIXELS, name: str | None = None) -> np.ndarray:
    """Decode anything image-like into uint8 ``(H, W, 3)`` RGB.

    source: a path, bytes, a binary file-like (e.g. a Streamlit upload), a ``PIL.Image`` or a
        numpy array (HxW, HxWx1/2/3/4; uint8, uint16 (0..65535), bool, or float in [0, 1]).
    max_pixels: refuse larger images (from the header, before decoding); ``None``: only PIL's own
        decompression-bomb limit applies.
    name: how to call the image in error messages (default: the file name).

    Transparency is composited onto white; EXIF orientation is applied; 16-bit data are scaled
    to 8 bits. Raises ``ImageError`` (one sentence) for anything unusable.
    """
    label = name or _source_name(source)
    try:
        return _load(source, max_pixels=max_pixels)
    except _Problem as p:
        if p.kind == "too_large":
            msg = f"{label} {p.reason}; downscale it before uploading"
        elif p.kind == "path":
            msg = f"{source} cannot be read: {p.reason}; check the path"
        elif p.kind == "type":
            msg = p.reason
        elif p.kind == "content":
            msg = f"{label} cannot be used: {p.reason}"
        else:
            msg = f"{label} is not a readable image ({p.reason}); {_FIX}"
        raise ImageError(msg) from None


def _as_rgb_uint8(img: Any) -> np.ndarray:
    if isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3:
        return img
    return load_image(img, max_pixels=None)


def image_to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` (or anything ``load_image`` accepts) -> float32 ``(3, H, W)`` in [-1, 1]."""
    return _to_tensor(_as_rgb_uint8(img))


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """float ``(3, H, W)`` or ``(1, 3, H, W)`` in [-1, 1] -> uint8 ``(H, W, 3)`` (values clamped)."""
    t = torch.as_tensor(t)
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3 or t.shape[0] != 3:
        raise ImageError(f"expected a (3, H, W) or (1, 3, H, W) tensor, got shape {tuple(t.shape)}")
    t = t.detach().to("cpu", torch.float32).clamp(-1, 1).add(1).mul(127.5).round()
    return t.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def _resize_shorter(img: np.ndarray | Image.Image, size: int) -> np.ndarray:
    """Resize (antialiased) so that the shorter side is exactly ``size``; aspect ratio kept."""
    pil = img if isinstance(img, Image.Image) else Image.fromarray(img)
    w, h = pil.size
    short = min(w, h)
    if short == size:
        return np.asarray(pil) if isinstance(img, Image.Image) else img
    if w <= h:
        nw, nh = size, max(size, round(h * size / w))
    else:
        nw, nh = max(size, round(w * size / h)), size
    return np.asarray(pil.resize((nw, nh), _RESAMPLE))


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (antialiased), then crop the centre ``size x size``.

    img: uint8 ``(H, W, 3)`` -> uint8 ``(size, size, 3)``."""
    size = int(size)
    if size < 1:
        raise ImageError(f"crop size must be a positive integer, got {size}")
    a = _resize_shorter(_as_rgb_uint8(img), size)
    h, w = a.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return np.array(a[y:y + size, x:x + size], order="C", copy=True)


def fit_to_multiple(img: np.ndarray, multiple: int = 4, max_pixels: int | None = FIT_MAX_PIXELS) -> np.ndarray:
    """Prepare an image for native-resolution reconstruction.

    Downscales (antialiased, aspect ratio kept) until ``H * W <= max_pixels``, then crops the
    centre down to sides that are multiples of ``multiple`` (the model's downsampling factor;
    at most ``multiple - 1`` pixels lost per side). uint8 ``(H, W, 3)`` -> uint8 ``(H', W', 3)``.
    """
    a = _as_rgb_uint8(img)
    h, w = a.shape[:2]
    if max_pixels is not None and h * w > max_pixels:
        scale = math.sqrt(max_pixels / (h * w))
        nh, nw = max(1, int(h * scale)), max(1, int(w * scale))
        a = np.asarray(Image.fromarray(a).resize((nw, nh), _RESAMPLE))
        h, w = nh, nw
    if h < multiple or w < multiple:
        raise ImageError(f"the image is {w}x{h} pixels, smaller than {multiple}x{multiple}; use a larger image")
    ch, cw = h - h % multiple, w - w % multiple
    y, x = (h - ch) // 2, (w - cw) // 2
    return np.array(a[y:y + ch, x:x + cw], order="C", copy=True)


# ----------------------------------------------------------------------------------------------
# Shared dataset machinery
# ----------------------------------------------------------------------------------------------

def _rng(*key: int) -> np.random.Generator:
    """A generator that is a pure function of the integers in ``key``."""
    return np.random.default_rng([int(k) & 0xFFFFFFFFFFFFFFFF for k in key])


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [-1, 1]."""
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:  # torch.from_numpy warns on read-only arrays (PIL, cached photos)
        a = a.copy()
    return torch.from_numpy(a).permute(2, 0, 1).float().div_(127.5).sub_(1.0).contiguous()


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


# ----------------------------------------------------------------------------------------------
# Built-in photos
# ----------------------------------------------------------------------------------------------

# name -> (distribution, path inside the installed package)
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


class BuiltinPhotos(_EpochItems):
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
        self.split = _norm_split(split)
        self.size = int(size)
        self.seed = int(seed)
        if self.size < 1:
            raise DataError(f"image size must be a positive integer, got {size}")
        default = self.TRAIN_LENGTH if self.split == "train" else self.VAL_LENGTH
        self.length = default if length is None else int(length)
        self.names = tuple(n for n, _ in builtin_photos(self.split))
        self._pil: list[Image.Image] | None = None

    def __len__(self) -> int:
        return self.length

    def __getstate__(self):  # workers rebuild the PIL images from the cached arrays
        state = self.__dict__.copy()
        state["_pil"] = None
        return state

    def _images(self) -> list[Image.Image]:
        if self._pil is None:
            self._pil = [Image.fromarray(np.asarray(a)) for _, a in builtin_photos(self.split)]
        return self._pil

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


# ----------------------------------------------------------------------------------------------
# Folders of images
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Downsampled ImageNet (train_data_batch_N, val_data; .npz or pickle)
# ----------------------------------------------------------------------------------------------

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


def _npz_member_memmap(path: Path, member: str = "data.npy") -> np.ndarray | None:
    """Map an uncompressed member of an .npz in place (None when it is compressed)."""
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            return None
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        header_offset = info.header_offset
    with open(path, "rb") as f:
        f.seek(header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = header_offset + 30 + name_len + extra_len
        f.seek(start)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    if dtype.hasobject:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _npz_data_shape(path: Path) -> tuple[int, ...] | None:
    with zipfile.ZipFile(path) as zf:
        try:
            with zf.open("data.npy") as f:
                version = np.lib.format.read_magic(f)
                fmt = np.lib.format
                reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                return tuple(reader(f)[0])
        except KeyError:
            return None


def _cache_dir() -> Path:
    return Path(os.environ.get("VQEXPLORE_CACHE") or Path.home() / ".cache" / "vqexplore")


class DownsampledImageNet(_EpochItems):
    """The official Downsampled ImageNet batch files as ``(3, size, size)`` items.

    files: the split's files (``train_data_batch_N[.npz]`` or ``val_data[.npz]``), in order.
    in_memory: True: load into RAM; False: memory-map (converting pickles/compressed npz once to
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
        self._mapped: list[tuple[Path, bool]] = []  # (file, is npz member) to reopen in workers
        arrays = [self._open(f) for f in self.files]
        sides = set()
        for f, a in zip(self.files, arrays):
            if a.ndim != 2 or a.dtype != np.uint8 or a.shape[1] % 3:
                raise DataError(f"{f} holds {a.dtype} data of shape {a.shape}, not rows of uint8 R, G, B "
                                f"planes; use the official Downsampled ImageNet files")
            side = math.isqrt(a.shape[1] // 3)
            if side * side * 3 != a.shape[1]:
                raise DataError(f"{f} has rows of {a.shape[1]} values, not 3 * s * s; use the official "
                                f"Downsampled ImageNet files")
            sides.add(side)
        if len(sides) > 1:
            raise DataError(f"the files {[str(f) for f in self.files]} mix image sizes {sorted(sides)}; "
                            f"use files of one resolution")
        self.side = sides.pop()
        self._arrays = arrays
        self._offsets = np.cumsum([0] + [len(a) for a in arrays])

    def _estimated_bytes(self) -> int:
        total = 0
        for f in self.files:
            shape = _npz_data_shape(f) if f.suffix == ".npz" else None
            total += int(np.prod(shape)) if shape else f.stat().st_size
        return total

    def _open(self, f: Path) -> np.ndarray:
        try:
            if self.in_memory:
                return self._load_full(f)
            if f.suffix == ".npz":
                mm = _npz_member_memmap(f)
                if mm is not None:
                    self._mapped.append((f, True))
                    return mm
            cached = self._converted(f)
            self._mapped.append((cached, False))
            return np.load(cached, mmap_mode="r")
        except DataError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, KeyError) as e:
            raise DataError(f"{f} cannot be read as a Downsampled ImageNet file ({_read_reason(e)}); "
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
        out = _cache_dir() / "imagenet64" / f"{f.name.split('.')[0]}-{key}.npy"
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
            self._arrays = [_npz_member_memmap(p) if is_npz else np.load(p, mmap_mode="r")
                            for p, is_npz in self._mapped]
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


# ----------------------------------------------------------------------------------------------
# Hugging Face datasets
# ----------------------------------------------------------------------------------------------

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
        from .hub import _endpoint_reachable

        if not _endpoint_reachable():
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


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------

def _resolve(source: str | os.PathLike) -> tuple[str, Any]:
    """-> (kind, details). kinds: builtin, hf, imagenet64, imagenet_layout, folder."""
    if isinstance(source, str) and source.strip().lower() == "builtin":
        return "builtin", None
    if isinstance(source, str) and source.startswith("hf:"):
        return "hf", _parse_hf(source)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"data source {source} does not exist; pass 'builtin', an image folder, the "
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

    source: "builtin", a folder (ImageNet layout or any images), the Downsampled ImageNet files,
        or "hf:<repo id | saved folder>[:<split>]" (see the module docstring).
    split: "train" (random crops and flips; call ``set_epoch``) or "val" (deterministic).
    in_memory: None = automatic (RAM if it fits ``IN_MEMORY_BUDGET``), True, False. Ignored for
        "builtin" (always in RAM).
    Raises DataError naming the source and what to do.
    """
    split = _norm_split(split)
    kind, info = _resolve(source)
    if kind == "builtin":
        return BuiltinPhotos(split, size=size, seed=seed)
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


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

def _order_seed(seed: int, epoch: int) -> int:
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(epoch) & 0xFFFFFFFFFFFFFFFF, 0x5EED])
    return int(state.generate_state(1, np.uint64)[0] & np.uint64(0x7FFFFFFFFFFFFFFF))


class EpochSampler(DistributedSampler):
    """Order = pure function of (seed, epoch); yields ``(epoch, index)`` keys to datasets that
    accept them (so the epoch reaches persistent workers), plain indices otherwise.

    Distributed like ``DistributedSampler`` (padded to a multiple of ``num_replicas``, rank r
    takes every num_replicas-th index). ``start`` skips this rank's first items without yielding
    them (mid-epoch resume); ``set_epoch`` resets it unless given.
    """

    def __init__(self, dataset: Dataset, *, shuffle: bool, seed: int = 0, epoch: int = 0,
                 num_replicas: int = 1, rank: int = 0, start: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.with_epoch = bool(getattr(dataset, "accepts_epoch_keys", False))
        self.set_epoch(epoch, start=start)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = int(epoch)
        if not 0 <= int(start) <= self.num_samples:
            raise ValueError(f"start {start} is outside this rank's {self.num_samples} samples")
        self.start = int(start)
        if hasattr(self.dataset, "set_epoch"):
            # for plain-index access in this process; workers get the epoch from the keys (a dataset
            # without key support only sees it with num_workers=0 or non-persistent workers)
            self.dataset.set_epoch(self.epoch)

    def order(self) -> list[int]:
        """This rank's full index order for the current epoch (before ``start``)."""
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(_order_seed(self.seed, self.epoch))
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        pad = self.total_size - n
        if pad > 0 and n > 0:
            order += (order * math.ceil(pad / n))[:pad]
        return order[self.rank:self.total_size:self.num_replicas]

    def __iter__(self) -> Iterator:
        order = self.order()[self.start:]
        if self.with_epoch:
            return iter([(self.epoch, i) for i in order])
        return iter(order)

    def __len__(self) -> int:
        return self.num_samples - self.start


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, num_workers: int = 0,
                drop_last: bool = False, distributed: bool = False, epoch: int = 0, start_batch: int = 0,
                num_replicas: int | None = None, rank: int | None = None) -> DataLoader:
    """A DataLoader over ``dataset`` whose batches are a pure function of (seed, epoch).

    The sampler is an ``EpochSampler`` (a ``DistributedSampler``): call
    ``loader.sampler.set_epoch(e)`` before each later epoch (or use ``iter_batches``).
    distributed: split across ``torch.distributed`` ranks (``num_replicas``/``rank`` override).
    start_batch: skip the first k batches of ``epoch`` without decoding them (mid-epoch resume).
    pin_memory when CUDA is available; persistent workers when ``num_workers > 0`` (unless the
    dataset has ``set_epoch`` but does not accept ``(epoch, index)`` keys).
    """
    if distributed:
        import torch.distributed as dist

        if num_replicas is None or rank is None:
            if not (dist.is_available() and dist.is_initialized()):
                raise RuntimeError("distributed=True needs torch.distributed initialised (torchrun) "
                                   "or explicit num_replicas and rank")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
    else:
        num_replicas, rank = 1, 0
    sampler = EpochSampler(dataset, shuffle=shuffle, seed=seed, epoch=epoch, num_replicas=num_replicas,
                           rank=rank, start=int(start_batch) * int(batch_size))
    generator = torch.Generator()
    generator.manual_seed(_order_seed(seed, -1))  # worker base seeds, for any third-party randomness
    # persistent workers keep their copy of the dataset: fine when the epoch travels in the keys,
    # wrong for a dataset that only learns it through set_epoch
    persistent = num_workers > 0 and (sampler.with_epoch or not hasattr(dataset, "set_epoch"))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, pin_memory=torch.cuda.is_available(),
                      persistent_workers=persistent, generator=generator)


def _batches_per_epoch(loader: DataLoader) -> int:
    n = loader.sampler.num_samples
    return n // loader.batch_size if loader.drop_last else math.ceil(n / loader.batch_size)


def iter_batches(loader: DataLoader, start_step: int = 0) -> Iterator[torch.Tensor]:
    """Batches forever, starting at global step ``start_step`` (step-based training, resume).

    Step s is batch ``s % B`` of epoch ``s // B`` with B full batches per epoch; the loader must
    come from ``make_loader`` and its ``epoch`` argument is overridden. Skipped batches are not
    decoded."""
    sampler = loader.sampler
    if not isinstance(sampler, EpochSampler):
        raise TypeError("iter_batches needs a loader made by make_loader")
    per_epoch = _batches_per_epoch(loader)
    if per_epoch == 0:
        raise DataError(f"the dataset has {len(loader.dataset)} items, fewer than one batch of {loader.batch_size}; "
                        f"use a smaller batch size or more data")
    epoch, k = divmod(int(start_step), per_epoch)
    while True:
        sampler.set_epoch(epoch, start=k * loader.batch_size)
        yield from loader
        epoch, k = epoch + 1, 0


@functools.lru_cache(maxsize=8)
def _validation_batch_cached(source: str, n: int, size: int) -> torch.Tensor:
    # decode only the n images needed (not a whole ImageNet val folder); batch files load as usual
    in_memory = None if _resolve(source)[0] == "imagenet64" else False
    ds = make_dataset(source, "val", size, in_memory=in_memory)
    if len(ds) == 0:
        raise DataError(f"{source} has no validation images; use a source with a val split")
    return torch.stack([ds[i] for i in range(min(n, len(ds)))])


def validation_batch(source: str = "builtin", n: int = 64, size: int = 64) -> torch.Tensor:
    """The first ``n`` items of the val split: float32 ``(n, 3, size, size)`` in [-1, 1].

    Fixed and deterministic (for dashboards and reconstruction grids); fewer than ``n`` when the
    split is smaller. Cached per (source, n, size); a fresh copy is returned."""
    return _validation_batch_cached(str(source), int(n), int(size)).clone()
