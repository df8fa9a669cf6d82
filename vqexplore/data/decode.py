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
    ``ImageError``. Every failure is an ``ImageError`` with one sentence saying what to do.
    A failure is classified by PIL's exception type (never by its message): an unknown format,
    a possible decompression bomb, a file that ends early (``EOFError``/``OSError`` while the
    pixels are read), or corrupt data (any other exception).
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import ImageError

__all__ = ["MAX_PIXELS", "FIT_MAX_PIXELS", "load_image", "image_to_tensor", "tensor_to_image", "center_crop",
           "fit_to_multiple"]

MAX_PIXELS = 40_000_000
"""Default limit of ``load_image``: larger images are refused from their header, before decoding."""

FIT_MAX_PIXELS = 1024 * 1024
"""Default pixel budget of ``fit_to_multiple`` (native-resolution reconstruction in the demo)."""

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


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [-1, 1]."""
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:  # torch.from_numpy warns on read-only arrays (PIL, cached photos)
        a = a.copy()
    return torch.from_numpy(a).permute(2, 0, 1).float().div_(127.5).sub_(1.0).contiguous()
