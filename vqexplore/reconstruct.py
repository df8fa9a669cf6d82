"""Reconstruct images with a tokenizer and describe the result: the pieces both apps show
(reconstruction, per-pixel error map, token map, token and bit counts, PSNR/SSIM/LPIPS).

Images here are numpy uint8 (H, W, 3) arrays, as apps receive and display them.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .data import center_crop, fit_to_multiple, image_to_tensor, tensor_to_image
from .errors import CheckpointError
from .metrics import psnr, ssim, to_unit
from .utils import eval_mode

# Native-resolution reconstructions are capped to this many pixels (about 512 x 512): on CPU
# the SimpleCNN decodes that in well under a second, and larger inputs are downscaled first.
NATIVE_MAX_PIXELS = 512 * 512
MODES = ("64", "native")
NATIVE_MIN_SIDE = 8  # SSIM's 7 x 7 window, rounded up to the downsampling factor
DEFAULT_RESOLUTION = 64  # the study's size: SimpleCNN checkpoints that do not record theirs


def native_resolution(model) -> int:
    """The image side a tokenizer was trained at: config.json's ``resolution`` (the trainer and
    the importers record it), else 64, the study's and the demo set's size."""
    value = getattr(model, "config", {}).get("resolution")
    return int(value) if value else DEFAULT_RESOLUTION


def prepare_for(image: np.ndarray, model, mode: str = "train", *, max_pixels: int = NATIVE_MAX_PIXELS) -> np.ndarray:
    """uint8 (H, W, 3) -> what ``model`` should see: "train" (also "64", its older name) = resize
    and center crop to the model's training resolution (:func:`native_resolution`); "native" =
    own resolution, downscaled to ``max_pixels``, sides cropped to a multiple of the model's
    downsampling (4 for SimpleCNN, 16 for an f16 VQGAN)."""
    f = int(getattr(model, "downsample", 4))
    if mode in ("train", "64"):
        return center_crop(image, native_resolution(model))
    if mode == "native":
        return fit_to_multiple(image, f, max_pixels=max_pixels, min_side=max(NATIVE_MIN_SIDE, f))
    raise ValueError(f"mode must be 'train' or 'native', got {mode!r}")


@dataclass
class Reconstruction:
    """One image through one tokenizer.

    original, reconstruction, error_map, token_map: uint8 (H, W, 3) at the same size;
    indices: (H/f, W/f) int64 code ids (f = model.downsample); psnr in dB, ssim in [-1, 1], lpips >= 0 (None when
    its weights are unavailable); bits = num_tokens * log2(codebook_size).
    """

    original: np.ndarray
    reconstruction: np.ndarray
    error_map: np.ndarray
    token_map: np.ndarray
    indices: np.ndarray
    num_tokens: int
    codebook_size: int
    psnr: float
    ssim: float
    lpips: float | None = None

    @property
    def bits(self) -> float:
        return self.num_tokens * math.log2(self.codebook_size)

    def summary(self) -> dict:
        """JSON-able numbers for tables."""
        return {"tokens": self.num_tokens, "grid": f"{self.indices.shape[0]}x{self.indices.shape[1]}",
                "bits": round(self.bits, 1), "psnr": self.psnr, "ssim": self.ssim, "lpips": self.lpips}


def prepare_image(image: np.ndarray, mode: str = "64", *, size: int = 64,
                  max_pixels: int = NATIVE_MAX_PIXELS, multiple: int = 4) -> np.ndarray:
    """uint8 (H, W, 3) -> the model's input size: "64" = resize + center crop to size x size;
    "native" = own resolution, downscaled to ``max_pixels`` and sides cropped to a multiple of 4."""
    if mode == "64":
        return center_crop(image, size)
    if mode == "native":
        return fit_to_multiple(image, multiple, max_pixels=max_pixels, min_side=NATIVE_MIN_SIDE)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


@lru_cache(maxsize=8)
def token_palette(codebook_size: int) -> np.ndarray:
    """(K, 3) uint8 colours, one per code id; neighbouring ids get far-apart hues (golden
    ratio steps) so adjacent codes stay distinguishable in a token map."""
    k = np.arange(codebook_size)
    hue = (k * 0.6180339887498949) % 1.0
    sat = 0.55 + 0.45 * ((k * 7) % 3) / 2
    val = 0.65 + 0.35 * ((k * 5) % 4) / 3
    rgb = [colorsys.hsv_to_rgb(h, s, v) for h, s, v in zip(hue, sat, val)]
    return (np.asarray(rgb) * 255).round().astype(np.uint8)


def colorize_tokens(indices: np.ndarray, codebook_size: int, cell: int = 4) -> np.ndarray:
    """(h, w) code ids -> uint8 (h*cell, w*cell, 3): each token a flat cell of its code's colour."""
    img = token_palette(int(codebook_size))[np.asarray(indices, dtype=np.int64)]
    return img.repeat(cell, axis=0).repeat(cell, axis=1)


def error_heatmap(original: np.ndarray, reconstruction: np.ndarray, vmax: float = 0.5) -> np.ndarray:
    """Per-pixel mean absolute error (over channels, images in [0, 1]) coloured with the
    'inferno' colormap, 0 -> black, >= vmax -> yellow. uint8 (H, W, 3)."""
    from matplotlib import colormaps

    err = np.abs(original.astype(np.float32) - reconstruction.astype(np.float32)).mean(-1) / 255.0
    rgba = colormaps["inferno"](np.clip(err / vmax, 0.0, 1.0))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


@torch.no_grad()
def reconstruct(model, images: list[np.ndarray], *, lpips=None, device: str | torch.device | None = None,
                batch_size: int = 64) -> list[Reconstruction]:
    """Run uint8 (H, W, 3) images (already prepared: sides multiples of 4) through ``model``.

    Images of equal size are batched together. ``lpips`` is an optional
    ``vqexplore.metrics.LPIPS`` module. The model's train/eval mode is restored afterwards.
    """
    channels = getattr(model, "config", {}).get("in_channels", 3)
    if channels != 3:
        raise CheckpointError(f"the checkpoint takes {channels}-channel images (in_channels={channels}) and "
                              f"these are RGB images; pick an RGB tokenizer")
    device = device or next(model.parameters()).device
    results: list[Reconstruction | None] = [None] * len(images)
    by_shape: dict[tuple, list[int]] = {}
    for i, img in enumerate(images):
        by_shape.setdefault(img.shape, []).append(i)
    with eval_mode(model):
        for ids in by_shape.values():
            for start in range(0, len(ids), batch_size):
                chunk = ids[start:start + batch_size]
                x = torch.stack([image_to_tensor(images[i]) for i in chunk]).to(device)
                out = model(x)
                recon = out.reconstruction.clamp(-1, 1)
                a, b = to_unit(x), to_unit(recon)
                p, s = psnr(a, b).cpu(), ssim(a, b).cpu()
                lp = lpips(a, b).cpu() if lpips is not None else None
                for j, i in enumerate(chunk):
                    orig = images[i]
                    rec = tensor_to_image(recon[j].cpu())
                    idx = out.indices[j].cpu().numpy()
                    results[i] = Reconstruction(
                        original=orig, reconstruction=rec, error_map=error_heatmap(orig, rec),
                        token_map=colorize_tokens(idx, model.codebook_size, model.downsample),
                        indices=idx, num_tokens=int(idx.size), codebook_size=model.codebook_size,
                        psnr=float(p[j]), ssim=float(s[j]), lpips=None if lp is None else float(lp[j]))
    return results  # type: ignore[return-value]
