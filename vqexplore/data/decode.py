"""Images in, tensors out: decode anything image-like into uint8 RGB, convert, crop, fit.

Tensors are float32 ``(3, H, W)`` (or batched ``(B, 3, H, W)``) in ``[-1, 1]``; numpy images are
uint8 ``(H, W, 3)`` RGB.

    Accepts a path, bytes, a binary file-like, a ``PIL.Image`` or a numpy array and always returns
    uint8 ``(H, W, 3)``. EXIF orientation is applied. Transparent pixels (RGBA, LA, palette or
    colour-key transparency) are composited onto **white**, which is what a viewer shows on a
    white page; the tokenizer has no alpha channel. 16-bit images are scaled (65535 -> 255), not
    clipped. Only raster formats are opened (JPEG, PNG, WebP, GIF, BMP, TIFF, ...; never EPS,
    which would run Ghostscript). An image larger than ``max_pixels`` (default ``MAX_PIXELS``,
    40 megapixels) is refused from its header, before decoding. PIL's own decompression-bomb
    limit (``PIL.Image.MAX_IMAGE_PIXELS``) is left untouched and also applies; its errors become
    ``ImageError``. Before a pixel is decoded, the memory the decoding will take (PIL's decoded
    image, the uint8 RGB result and the conversion and crop/resize after it) is estimated from the
    header and refused when over ``memory_budget()`` (``$VQEXPLORE_MEMORY_BUDGET``, default 384 MB):
    conversions run in strips of rows and never widen a whole image to 32/64-bit integers, and
    crops are cut before resizing, so no request grows past that estimate whatever its aspect
    ratio. Every failure is an ``ImageError`` with one sentence saying what to do.
    A failure is classified by PIL's exception type (never by its message): an unknown format,
    a possible decompression bomb, a file that ends early (``EOFError``/``OSError`` while the
    pixels are read), or corrupt data (any other exception).
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import ConfigError, ImageError
from ..utils import parse_size

__all__ = ["MAX_PIXELS", "FIT_MAX_PIXELS", "MEMORY_BUDGET_ENV", "DEFAULT_MEMORY_BUDGET", "MAX_ASPECT", "memory_budget",
           "decode_peak", "load_image", "image_to_tensor", "tensor_to_image", "center_crop", "fit_to_multiple"]

MAX_PIXELS = 40_000_000
"""Default limit of ``load_image``: larger images are refused from their header, before decoding."""

FIT_MAX_PIXELS = 1024 * 1024
"""Default pixel budget of ``fit_to_multiple`` (native-resolution reconstruction in the demo)."""

MEMORY_BUDGET_ENV = "VQEXPLORE_MEMORY_BUDGET"
DEFAULT_MEMORY_BUDGET = 384 * 2 ** 20
"""Memory one image may take while it is decoded, converted and cropped (``memory_budget()``):
384 MB keeps a demo request, model work included, under 512 MB."""

MAX_ASPECT = 4
"""Training data: a photo longer than 4:1 keeps its central 4:1 part (resized, never the whole strip)."""

_STRIP_PIXELS = 1 << 18  # conversions run on strips of about this many pixels (a few MB of temporaries)
_STRIP_BYTES = _STRIP_PIXELS * 48  # their temporaries at most: crops, arrays, uint16/uint32 products
_RESIZE_WHOLE_PIXELS = 1 << 22  # resized images up to 4 megapixels are made whole, then cropped


def memory_budget() -> int:
    """Bytes one image may take while decoded (``$VQEXPLORE_MEMORY_BUDGET``, e.g. "384mb";
    default ``DEFAULT_MEMORY_BUDGET``). Raises ConfigError for a value that is not a size."""
    text = os.environ.get(MEMORY_BUDGET_ENV, "").strip()
    if not text:
        return DEFAULT_MEMORY_BUDGET
    size = parse_size(text)
    if size is None:
        raise ConfigError(f"{MEMORY_BUDGET_ENV}={text!r} is not a size; set it to e.g. 384mb", key=None)
    return size


def _pil_bytes_per_pixel(mode: str) -> int:
    """Bytes per pixel of a decoded PIL image (PIL keeps RGB in 4 bytes, 16-bit gray in 2)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def decode_peak(width: int, height: int, mode: str = "RGBA", *, transposed: bool = False) -> int:
    """Bytes of memory decoding a ``width x height`` image of PIL ``mode`` into uint8 RGB and
    cropping or resizing it takes at its peak: the decoded image (plus its EXIF-rotated copy)
    beside the uint8 RGB result, or that result beside PIL's 4-byte copy for resizing, plus the
    conversion's strip temporaries."""
    pixels = int(width) * int(height)
    decoded = _pil_bytes_per_pixel(mode) * (2 if transposed else 1)
    return pixels * (max(decoded, 4) + 3) + _STRIP_BYTES


def _mb(n: int) -> str:
    return f"{n / 2 ** 20:,.0f} MB"


# Raster formats only: EPS would hand the file to Ghostscript, others are not photos.
_SAFE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "PPM", "TGA", "ICO",
                 "JPEG2000", "AVIF", "QOI", "PCX", "SGI")
_FIX = "upload a JPEG, PNG or WebP"
_RESAMPLE = Image.Resampling.BICUBIC  # antialiased when downscaling (PIL scales the kernel)



class _Problem(Exception):
    """Why an image cannot be used; callers turn it into ImageError or DataError.

    kind: "unreadable" (bad bytes), "too_large", "path" (missing/folder/unopenable), "type" (not
    an image source at all) or "content" (an array/PIL image with unusable values)."""

    def __init__(self, reason: str, kind: str = "unreadable"):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def _safe_formats() -> tuple[str, ...]:
    Image.init()
    return tuple(f for f in _SAFE_FORMATS if f in Image.OPEN)


def _mp(pixels: float) -> str:
    return f"{pixels / 1e6:.1f} megapixels"


def _check_pixels(w: int, h: int, max_pixels: int | None) -> None:
    if w <= 0 or h <= 0:
        raise _Problem("it has no pixels")
    if max_pixels is not None and w * h > max_pixels:
        raise _Problem(f"is {w}x{h} pixels ({_mp(w * h)}), more than the limit of {_mp(max_pixels)}", kind="too_large")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _read_reason(e: BaseException) -> str:
    """Why PIL could not read the pixels, from the exception's type alone.

    PIL reports a file that ends early (or a broken compressed stream) as ``EOFError`` or
    ``OSError``; any other exception (``SyntaxError``, ``ValueError``, ``struct.error``, ...) is
    data it could not make sense of."""
    if isinstance(e, EOFError):
        return "truncated file"
    if isinstance(e, OSError):
        return "truncated or corrupt file"
    return f"corrupt data: {_first_line(e)}"


def _declared_size(fp: Any) -> tuple[int, int] | None:
    """(w, h) from the header, read by PIL's own format plugins (without its bomb check)."""
    for fmt in _safe_formats():
        factory, accept = Image.OPEN[fmt]
        try:
            fp.seek(0)
            if accept is not None and not accept(fp.read(16)):
                continue
            fp.seek(0)
            return factory(fp, "").size
        except Exception:  # not this format: try the next, as Image.open does
            continue
    return None


def _bomb_problem(fp: Any) -> _Problem:
    """PIL refused to open ``fp`` as a possible decompression bomb (more than twice
    ``Image.MAX_IMAGE_PIXELS``; between one and two times it only warns)."""
    size = _declared_size(fp)
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    if size is not None and limit:
        return _Problem(f"declares {_mp(size[0] * size[1])}, more than the limit of {_mp(limit)} "
                        f"(a possible decompression bomb)", kind="too_large")
    return _Problem("is too large to decode safely (a possible decompression bomb)", kind="too_large")


def _row_strips(shape: tuple[int, ...]) -> Iterator[slice]:
    """Row ranges of an (H, W, ...) image, each about ``_STRIP_PIXELS`` pixels (at least one row)."""
    h, w = shape[0], max(1, shape[1] if len(shape) > 1 else 1)
    step = max(1, _STRIP_PIXELS // w)
    for y in range(0, h, step):
        yield slice(y, min(h, y + step))


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 4) -> uint8 (H, W, 3) on white, strip by strip in uint16: rgb * a + 255 *
    (255 - a) + 127 is at most 65152, so nothing is widened beyond 16 bits or beyond a strip."""
    out = np.empty(rgba.shape[:2] + (3,), np.uint8)
    for rows in _row_strips(rgba.shape):
        rgb = rgba[rows, :, :3].astype(np.uint16)
        alpha = rgba[rows, :, 3:4].astype(np.uint16)
        rgb *= alpha
        rgb += 255 * (255 - alpha) + 127
        rgb //= 255
        out[rows] = rgb
    return out


def _scale16(a: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 with rounding (65535 -> 255, 32768 -> 128), strip by strip in uint32
    (65535 * 255 + 32767 < 2^32)."""
    out = np.empty(a.shape, np.uint8)
    for rows in _row_strips(a.shape):
        part = a[rows].astype(np.uint32)
        part *= 255
        part += 32767
        part //= 65535
        out[rows] = part
    return out


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
    top = None
    if im.mode == "I":  # 32-bit integer data above 16 bits: use its own range
        top = int(im.getextrema()[1])
    out = np.empty((im.height, im.width, 3), np.uint8)
    for rows in _row_strips((im.height, im.width)):
        out[rows] = _pil_strip_to_rgb(im.crop((0, rows.start, im.width, rows.stop)), top)
    return out


def _pil_strip_to_rgb(im: Image.Image, top: int | None) -> np.ndarray:
    """A few rows of a loaded PIL image of any mode -> uint8 (h, W, 3) (``top``: mode I's maximum)."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.clip(np.asarray(im).astype(np.int64), 0, None)
        if mode == "I" and top is not None and top > 65535:
            a = (a * 255 + top // 2) // top
            return _gray_to_rgb(a.astype(np.uint8))
        return _gray_to_rgb(_scale16(np.minimum(a, 65535)))
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
    except Image.DecompressionBombError:
        raise _bomb_problem(fp) from None
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
        _check_budget(im)
        try:
            im.seek(0)
            im.load()
        except Image.DecompressionBombError:  # a multi-frame image whose later frame is huge
            raise _Problem("is too large to decode safely (a possible decompression bomb)",
                           kind="too_large") from None
        except Exception as e:
            raise _Problem(_read_reason(e)) from None
        try:
            return _pil_to_rgb(im)
        except _Problem:
            raise
        except Exception as e:  # a decoder that fails lazily during conversion
            raise _Problem(_read_reason(e)) from None


def _check_budget(im: Image.Image) -> None:
    """Refuse, before decoding, an image whose decoding would take more than ``memory_budget()``."""
    # Not im.getexif(): on a PNG it decodes the whole image to look for EXIF after the pixels.
    # EXIF in the header may rotate the image (a second copy): counted whenever it is there.
    peak = decode_peak(im.width, im.height, im.mode, transposed="exif" in im.info)
    budget = memory_budget()
    if peak > budget:
        raise _Problem(f"is {im.width}x{im.height} pixels ({im.mode}), which takes about {_mb(peak)} of memory "
                       f"to decode, more than the limit of {_mb(budget)}", kind="too_large")


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
        try:
            f = open(path, "rb")
        except OSError as e:
            raise _Problem(f"it cannot be opened ({e.strerror or _first_line(e)})", kind="path") from None
        with f:
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
            msg = f"{name or source} cannot be read: {p.reason}; check the path"
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


def _resized_crop(img: np.ndarray | Image.Image, size: int, out_w: int, out_h: int) -> np.ndarray:
    """The centre ``out_w x out_h`` of the image resized (antialiased, aspect ratio kept) so that
    its shorter side is ``size``, computed without making the resized image: PIL's ``box``
    resamples only the source region the crop covers, with the same filter positions as a full
    resize, so the pixels equal resize-then-crop while memory stays at the output's size (a
    100000x1 strip no longer becomes a 6,400,000x64 image first)."""
    a = img if isinstance(img, np.ndarray) else None
    w, h = (a.shape[1], a.shape[0]) if a is not None else img.size
    short = min(w, h)
    if w <= h:
        nw, nh = size, max(size, round(h * size / w))
    else:
        nw, nh = max(size, round(w * size / h)), size
    out_w, out_h = min(out_w, nw), min(out_h, nh)
    x, y = (nw - out_w) // 2, (nh - out_h) // 2
    if short == size:  # no resampling: a plain crop
        if a is None:
            a = np.asarray(img)
        return np.array(a[y:y + out_h, x:x + out_w], order="C", copy=True)
    if nw * nh <= _RESIZE_WHOLE_PIXELS:  # small enough: resize whole, crop (the pixels as always)
        pil = Image.fromarray(a) if a is not None else img
        return np.array(np.asarray(pil.resize((nw, nh), _RESAMPLE))[y:y + out_h, x:x + out_w], order="C", copy=True)
    sx, sy = w / nw, h / nh
    box = (x * sx, y * sy, (x + out_w) * sx, (y + out_h) * sy)
    # The filter reaches beyond the box by its support (2 output pixels, scaled): hand PIL only
    # those source rows and columns, so a huge strip is never copied whole into a PIL image.
    reach_x, reach_y = 3 * max(sx, 1.0), 3 * max(sy, 1.0)
    x0, y0 = max(0, math.floor(box[0] - reach_x)), max(0, math.floor(box[1] - reach_y))
    x1, y1 = min(w, math.ceil(box[2] + reach_x)), min(h, math.ceil(box[3] + reach_y))
    if a is not None and (x0, y0, x1, y1) != (0, 0, w, h):
        pil = Image.fromarray(np.ascontiguousarray(a[y0:y1, x0:x1]))
        shifted = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
        return np.array(pil.resize((out_w, out_h), _RESAMPLE, box=shifted))
    pil = Image.fromarray(a) if a is not None else img
    return np.array(pil.resize((out_w, out_h), _RESAMPLE, box=box))


def _resize_shorter(img: np.ndarray | Image.Image, size: int, max_aspect: float | None = MAX_ASPECT) -> np.ndarray:
    """Resize (antialiased) so that the shorter side is exactly ``size``; aspect ratio kept up to
    ``max_aspect``: the longer side is cut to its centre ``max_aspect * size`` (before resizing)."""
    cap = 2 ** 62 if max_aspect is None else max(size, int(max_aspect * size))
    return _resized_crop(img, size, cap, cap)


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (antialiased), then crop the centre ``size x size``
    (the crop is cut first, so memory stays at the output's size for any aspect ratio).

    img: uint8 ``(H, W, 3)`` -> uint8 ``(size, size, 3)``."""
    size = int(size)
    if size < 1:
        raise ImageError(f"crop size must be a positive integer, got {size}")
    return _resized_crop(_as_rgb_uint8(img), size, size, size)


def fit_to_multiple(img: np.ndarray, multiple: int = 4, max_pixels: int | None = FIT_MAX_PIXELS,
                    min_side: int | None = None) -> np.ndarray:
    """Prepare an image for native-resolution reconstruction.

    Downscales (antialiased, aspect ratio kept) until ``H * W <= max_pixels``, then crops the
    centre down to sides that are multiples of ``multiple`` (the model's downsampling factor;
    at most ``multiple - 1`` pixels lost per side). Both sides must then be at least
    ``min_side`` (default ``multiple``); an image too small or too elongated for that is refused
    before anything is resized. uint8 ``(H, W, 3)`` -> uint8 ``(H', W', 3)``.
    """
    least = max(multiple, min_side or multiple)
    a = _as_rgb_uint8(img)
    h, w = a.shape[:2]
    nh, nw = h, w
    if max_pixels is not None and h * w > max_pixels:
        scale = math.sqrt(max_pixels / (h * w))
        nh, nw = max(1, int(h * scale)), max(1, int(w * scale))
    if min(nh, nw) < least:
        if (nh, nw) != (h, w):
            raise ImageError(f"the image is {w}x{h} pixels, too elongated for native resolution: fitted into "
                             f"{max_pixels:,} pixels it would be {nw}x{nh}, and both sides must be at least "
                             f"{least} pixels; crop it or use the 64 x 64 center crop")
        raise ImageError(f"the image is {w}x{h} pixels; native resolution needs both sides at least {least} "
                         f"pixels, so use a larger image or the 64 x 64 center crop")
    if (nh, nw) != (h, w):
        a = np.asarray(Image.fromarray(a).resize((nw, nh), _RESAMPLE))
        h, w = nh, nw
    ch, cw = h - h % multiple, w - w % multiple
    y, x = (h - ch) // 2, (w - cw) // 2
    return np.array(a[y:y + ch, x:x + cw], order="C", copy=True)


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [-1, 1]."""
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:  # torch.from_numpy warns on read-only arrays (PIL, cached photos)
        a = a.copy()
    return torch.from_numpy(a).permute(2, 0, 1).float().div_(127.5).sub_(1.0).contiguous()
