"""Token surgery: edit a tokenizer's code grid and decode it, to see what one token does where.

Images are uint8 (H, W, 3) arrays as the apps show them; code grids are int64 (h, w) arrays with
h = H / f, w = W / f (``f = model.downsample``: 4 for SimpleCNN, 16 for the published VQGANs).

- :func:`edit_tokens` replaces the codes of some cells (a boolean (h, w) mask, a list of
  (row, col) cells, or a box from :func:`box_cells`) by one code;
- :func:`nearest_codes` finds the codes closest to a code in the codebook (what "the nearest
  other code" means: the smallest change a quantizer could have made there);
- :func:`decoder_footprint` says which output pixels can depend on given cells: the decoder's
  receptive field, computed from its convolutions;
- :func:`token_surgery` decodes the original and the edited grid together and returns both
  images, the pixels that changed and PSNR before / after.

The edit is exact: SimpleCNN's decoder is convolutional, so only pixels inside the footprint of
the edited cells can change, and ``tests/test_surgery.py`` checks that every pixel outside it is
bit-identical. A VQGAN decoder is not local: its GroupNorm layers normalise with statistics of the
whole feature map and its attention layers mix every position, so one edited token can change
every pixel; its footprint is the whole image (:func:`decoder_is_local` says which case holds),
and the changed pixels show how far the edit really reached.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .utils import eval_mode

__all__ = ["box_cells", "cells_mask", "edit_tokens", "nearest_codes", "decoder_footprint", "decoder_is_local",
           "decode_grid", "SurgeryResult", "token_surgery", "cells_from_points", "parse_cells",
           "format_cells", "majority_code"]


def box_cells(shape: tuple[int, int], top: int, left: int, bottom: int, right: int) -> np.ndarray:
    """Boolean (h, w) mask of the cells in rows top..bottom and columns left..right (inclusive,
    in any order, clipped to the grid)."""
    h, w = shape
    r0, r1 = sorted((int(top), int(bottom)))
    c0, c1 = sorted((int(left), int(right)))
    mask = np.zeros((h, w), dtype=bool)
    mask[max(r0, 0):min(r1, h - 1) + 1, max(c0, 0):min(c1, w - 1) + 1] = True
    return mask


def cells_mask(shape: tuple[int, int], cells) -> np.ndarray:
    """A boolean (h, w) mask from a mask of that shape or an iterable of (row, col) cells.
    A cell outside the grid raises ValueError naming it."""
    h, w = shape
    if isinstance(cells, np.ndarray) and cells.dtype == bool:
        if cells.shape != (h, w):
            raise ValueError(f"the cell mask has shape {cells.shape}, the token grid {(h, w)}")
        return cells.copy()
    mask = np.zeros((h, w), dtype=bool)
    for cell in cells:
        r, c = (int(v) for v in cell)
        if not (0 <= r < h and 0 <= c < w):
            raise ValueError(f"cell ({r}, {c}) lies outside the {h} x {w} token grid")
        mask[r, c] = True
    return mask


def edit_tokens(indices: np.ndarray, cells, code: int, codebook_size: int | None = None) -> np.ndarray:
    """A copy of the int (h, w) grid ``indices`` with the ``cells`` (see :func:`cells_mask`) set
    to ``code``. ``codebook_size`` checks that the code exists."""
    indices = np.asarray(indices)
    if indices.ndim != 2:
        raise ValueError(f"indices must be an (h, w) grid of code ids, got shape {indices.shape}")
    code = int(code)
    if code < 0 or (codebook_size is not None and code >= codebook_size):
        raise ValueError(f"code must lie in [0, {codebook_size}), got {code}")
    out = indices.astype(np.int64, copy=True)
    out[cells_mask(out.shape, cells)] = code
    return out


@torch.no_grad()
def nearest_codes(model: nn.Module, code: int, k: int = 5, *, among: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` codes nearest to ``code`` in the codebook (euclidean distance between
    ``model.codebook_vectors()`` rows), ``code`` itself excluded; ``among``: a boolean (K,) mask
    (e.g. ``counts > 0``, the codes the encoder uses) to choose from. Ties go to the lower id.
    Returns (ids int64 (n,), distances float32 (n,)), closest first, n <= k."""
    vectors = model.codebook_vectors().detach().float().cpu()
    size = vectors.shape[0]
    code = int(code)
    if not 0 <= code < size:
        raise ValueError(f"code must lie in [0, {size}), got {code}")
    dist = (vectors - vectors[code]).norm(dim=1).numpy().astype(np.float32)
    allowed = np.ones(size, dtype=bool) if among is None else np.asarray(among, dtype=bool).copy()
    if allowed.shape != (size,):
        raise ValueError(f"among must be a boolean mask of the {size} codes, got shape {allowed.shape}")
    allowed[code] = False
    ids = np.flatnonzero(allowed)
    order = np.lexsort((ids, dist[ids]))[:max(0, int(k))]  # by distance, then id
    return ids[order].astype(np.int64), dist[ids[order]]


def _out_size(module: nn.Module, n: int, axis: int) -> int:
    k, s, p, d = (module.kernel_size[axis], module.stride[axis], module.padding[axis], module.dilation[axis])
    if isinstance(module, nn.ConvTranspose2d):
        return (n - 1) * s - 2 * p + d * (k - 1) + module.output_padding[axis] + 1
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _spread(module: nn.Module, lo: int, hi: int, n: int, axis: int) -> tuple[int, int, int]:
    """Output interval [lo', hi'] (inclusive, clipped) that input interval [lo, hi] of a length-n
    axis reaches through one convolution, and the output length."""
    k, s, p, d = (module.kernel_size[axis], module.stride[axis], module.padding[axis], module.dilation[axis])
    out = _out_size(module, n, axis)
    if isinstance(module, nn.ConvTranspose2d):
        # input i writes outputs i*s - p + j*d, j in [0, k)
        new_lo, new_hi = lo * s - p, hi * s - p + d * (k - 1)
    else:
        # output o reads inputs o*s - p + j*d, j in [0, k)
        new_lo, new_hi = -((d * (k - 1) - p - lo) // s), (hi + p) // s  # ceil, floor
    return max(new_lo, 0), min(new_hi, out - 1), out


def _decoder_convs(model: nn.Module) -> list[nn.Module]:
    """The decoder's convolutions in forward order (post_quant, then the decoder). Residual
    blocks add their input back, which never reaches further than their convolutions."""
    parts = [getattr(model, "post_quant", None), getattr(model, "decoder", None)]
    return [m for part in parts if part is not None for m in part.modules()
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def decoder_is_local(model: nn.Module) -> bool:
    """True when a token reaches only the pixels its decoder convolutions reach (SimpleCNN);
    False when layers that see the whole feature map (GroupNorm, attention: the VQGAN) let
    every token touch every pixel."""
    from .nets import global_layers

    return not any(global_layers(part) for part in (getattr(model, "post_quant", None),
                                                    getattr(model, "decoder", None)) if part is not None)


def decoder_footprint(model: nn.Module, cells, grid_shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) mask of the decoded pixels that can depend on the tokens at ``cells``
    (see :func:`cells_mask`) of an (h, w) grid: the union of each cell's decoder receptive
    field, from the decoder's convolutions. For SimpleCNN with 2 residual blocks one token
    reaches a 34 x 34 pixel square (three 3x3 convolutions: 3 tokens either side, then two
    stride-2 transposed convolutions of width 4). A decoder that is not local
    (:func:`decoder_is_local`: GroupNorm, attention) gives the whole image when any cell is set."""
    mask = cells_mask(grid_shape, cells)
    if not decoder_is_local(model):
        f = model.downsample
        return np.full((grid_shape[0] * f, grid_shape[1] * f), bool(mask.any()))
    convs = _decoder_convs(model)
    h, w = grid_shape
    size = [h, w]
    for m in convs:
        size = [_out_size(m, size[0], 0), _out_size(m, size[1], 1)]
    out = np.zeros(tuple(size), dtype=bool)
    for r, c in zip(*np.nonzero(mask)):
        box, n = [int(r), int(r), int(c), int(c)], [h, w]
        for m in convs:
            box[0], box[1], n0 = _spread(m, box[0], box[1], n[0], 0)
            box[2], box[3], n1 = _spread(m, box[2], box[3], n[1], 1)
            n = [n0, n1]
        out[box[0]:box[1] + 1, box[2]:box[3] + 1] = True
    return out


@torch.no_grad()
def decode_grid(model: nn.Module, indices: np.ndarray | torch.Tensor) -> np.ndarray:
    """Decode int (h, w) or (B, h, w) code ids: uint8 (H, W, 3) or (B, H, W, 3)."""
    from .data import tensor_to_image

    ids = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
    single = ids.dim() == 2
    ids = ids[None] if single else ids
    device = next(model.parameters()).device
    with eval_mode(model):
        images = model.decode_indices(ids.to(device)).clamp(-1, 1).cpu()
    out = np.stack([tensor_to_image(x) for x in images])
    return out[0] if single else out


@dataclass
class SurgeryResult:
    """An edited token grid and what it decodes to.

    indices / edited: int64 (h, w) grids before and after; cells: bool (h, w) the edited cells;
    before / after: uint8 (H, W, 3) decodes of the two grids; changed: bool (H, W) pixels whose
    value differs; footprint: bool (H, W) pixels the edited cells can reach
    (:func:`decoder_footprint`; ``changed`` always lies inside it); psnr_before / psnr_after: dB
    of each decode against ``original`` (None without an original); psnr_between: dB of the
    edited decode against the original decode (100, the cap of ``metrics.psnr``, when
    nothing changed).
    """

    indices: np.ndarray
    edited: np.ndarray
    cells: np.ndarray
    before: np.ndarray
    after: np.ndarray
    changed: np.ndarray
    footprint: np.ndarray
    psnr_before: float | None
    psnr_after: float | None
    psnr_between: float

    @property
    def psnr_delta(self) -> float | None:
        """psnr_after - psnr_before in dB (negative: the edit made the reconstruction worse)."""
        if self.psnr_before is None or self.psnr_after is None:
            return None
        return self.psnr_after - self.psnr_before


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    from .metrics import psnr

    ta = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() / 255
    tb = torch.from_numpy(np.ascontiguousarray(b)).permute(2, 0, 1)[None].float() / 255
    return float(psnr(ta, tb)[0])


def token_surgery(model: nn.Module, indices: np.ndarray, cells, code: int, *,
                  original: np.ndarray | None = None) -> SurgeryResult:
    """Set ``cells`` (a bool (h, w) mask or (row, col) pairs) of the (h, w) grid ``indices`` to
    ``code``, decode the original and the edited grid (one batch), and measure the change.
    ``original``: the uint8 (H, W, 3) image the grid came from, for PSNR before / after."""
    indices = np.asarray(indices, dtype=np.int64)
    edited = edit_tokens(indices, cells, code, model.codebook_size)
    mask = cells_mask(indices.shape, cells)
    before, after = decode_grid(model, np.stack([indices, edited]))
    if original is not None and np.asarray(original).shape != before.shape:
        raise ValueError(f"original has shape {np.asarray(original).shape}, the decoded grid {before.shape}")
    changed = np.any(before != after, axis=-1)
    return SurgeryResult(
        indices=indices, edited=edited, cells=mask, before=before, after=after, changed=changed,
        footprint=decoder_footprint(model, mask, indices.shape),
        psnr_before=None if original is None else _psnr(original, before),
        psnr_after=None if original is None else _psnr(original, after),
        psnr_between=_psnr(before, after))


def cells_from_points(points: Iterable, shape: tuple[int, int]) -> np.ndarray:
    """Bool (h, w) mask from plotly selection points whose customdata starts with (row, col)
    (as :func:`vqexplore.plots.token_grid` draws them); points without it are ignored."""
    h, w = shape
    mask = np.zeros((h, w), dtype=bool)
    from .plots import _custom

    for point in points or []:
        data = _custom(point.get("customdata")) if isinstance(point, dict) else []
        if len(data) >= 2:
            r, c = int(data[0]), int(data[1])
            if 0 <= r < h and 0 <= c < w:
                mask[r, c] = True
    return mask


def parse_cells(text: str, shape: tuple[int, int]) -> np.ndarray:
    """Bool (h, w) mask from text such as ``"3,4"`` (row 3, column 4), ``"2-5,1-3"`` (rows 2..5 x
    columns 1..3) or several of them separated by ``;``. Empty text: no cells. Text that is not
    of that form, or cells outside the grid, raise ValueError with one sentence saying what to type."""
    h, w = shape
    mask = np.zeros((h, w), dtype=bool)
    for part in (p.strip() for p in str(text or "").replace("\n", ";").split(";")):
        if not part:
            continue
        bounds = []
        try:
            for axis in part.split(","):
                lo, _, hi = axis.strip().partition("-")
                bounds.append((int(lo), int(hi) if hi else int(lo)))
        except ValueError:
            bounds = []
        if len(bounds) != 2:
            raise ValueError(f"cannot read cells {part!r}: type row,col (e.g. 3,4) or a box r0-r1,c0-c1 "
                             f"(e.g. 2-5,1-3), several separated by ';'")
        (r0, r1), (c0, c1) = (sorted(b) for b in bounds)
        if r0 < 0 or c0 < 0 or r1 >= h or c1 >= w:
            raise ValueError(f"cells {part!r} reach outside the {h} x {w} token grid (rows 0-{h - 1}, "
                             f"columns 0-{w - 1})")
        mask[r0:r1 + 1, c0:c1 + 1] = True
    return mask


def format_cells(mask: np.ndarray) -> str:
    """The shortest :func:`parse_cells` text of a bool (h, w) mask: one box when the cells fill a
    rectangle, else the cells one by one (row-major)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return ""
    rows, cols = np.nonzero(mask)
    r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
    if mask[r0:r1 + 1, c0:c1 + 1].all():
        if r0 == r1 and c0 == c1:
            return f"{r0},{c0}"
        return f"{r0}-{r1},{c0}-{c1}"
    return "; ".join(f"{r},{c}" for r, c in zip(rows, cols))


def majority_code(indices: np.ndarray, mask: np.ndarray) -> int | None:
    """The most frequent code among the masked cells of an (h, w) grid (lowest id on ties), or
    None without cells: the code "the nearest other code" is measured from."""
    values = np.asarray(indices)[np.asarray(mask, dtype=bool)]
    if values.size == 0:
        return None
    ids, counts = np.unique(values, return_counts=True)
    return int(ids[np.argmax(counts)])
