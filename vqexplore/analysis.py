"""What the apps show about a tokenizer, computed by plain functions (no UI code here).

Everything takes a :class:`vqexplore.VQModel` and a fixed sample of images (B, 3, H, W) in
[-1, 1] (``vqexplore.data.validation_batch()``), and returns numpy arrays, dataclasses or pandas
frames that are cheap to pickle, so the apps can cache them (``st.cache_data``) and tests can
call them directly:

- code usage: :func:`encode_indices`, :func:`usage_counts`, :func:`usage_stats`,
  :func:`usage_over_steps` (a run's checkpoints, codes x steps);
- codebook projections (computed in ``vqexplore.projection``, re-exported here):
  :func:`project_codebook` (UMAP with exact neighbours, or PCA), :func:`encoder_outputs` (encoder
  outputs in code space, to project with the codes) and :func:`cached_projection`, which keeps
  results on disk keyed by the weights' hash;
- what a code means: :func:`receptive_field`, :func:`code_gallery` (image patches the encoder
  maps to a code, and the code's decoded tile);
- comparisons: :func:`comparison_row` / :func:`comparison_table` in the study's layout;
- training curves: :func:`training_curves` from ``<run>/metrics.jsonl``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .describe import describe_config
from .encoding import (EncodedSample, batches, device_of, encode_indices, encode_sample, usage_counts,
                       usage_stats)
from .hub import list_checkpoints, read_metrics, read_run_metrics
from .projection import (PROJECTION_METHODS, Projection, cached_projection, default_epochs, default_seed,
                         encoder_outputs, project_codebook, warm_up_projection, weights_fingerprint)
from .metricinfo import METRIC, TABLE_METRICS
from .runlayout import EVAL_METRICS
from .utils import cache_dir, eval_mode, flatten

__all__ = [
    "encode_indices", "usage_counts", "usage_stats", "EncodedSample", "encode_sample", "UsageOverSteps",
    "usage_over_steps",
    "encoder_outputs", "Projection", "project_codebook", "PROJECTION_METHODS", "default_seed",
    "default_epochs", "warm_up_projection",
    "weights_fingerprint", "cache_dir", "cached_projection",
    "receptive_field", "CodeGallery", "code_gallery", "decoded_tile",
    "STUDY_COLUMNS", "describe_config", "comparison_row", "protocol_row", "comparison_table",
    "training_curves", "curve_groups", "ema_smooth", "most_used_codes", "sample_grids",
]

# ---------------------------------------------------------------------------------------------
# Code usage
# ---------------------------------------------------------------------------------------------

@dataclass
class UsageOverSteps:
    """Code usage across a run's checkpoints.

    steps: (S,) training steps, oldest first; counts: (K, S) int64, column s the per-code counts
    of the checkpoint at ``steps[s]`` on the same image sample.
    """

    steps: np.ndarray
    counts: np.ndarray

    @property
    def codebook_size(self) -> int:
        return int(self.counts.shape[0])

    def usage(self) -> np.ndarray:
        """(S,) fraction of codes used at each step."""
        return (self.counts > 0).mean(axis=0)


def usage_over_steps(run_dir: str | Path, images: Tensor, *, max_checkpoints: int | None = 24,
                     loader: Callable | None = None, batch_size: int = 64,
                     counter: Callable | None = None) -> UsageOverSteps:
    """Per-code usage of every checkpoint of a run on the same images: codes x steps.

    ``max_checkpoints`` keeps that many, evenly spread over the run (always the first and the
    last). ``loader(path) -> VQModel`` defaults to :func:`vqexplore.load`. ``counter(path, model)
    -> (K,) counts`` replaces counting on ``images`` (e.g. the counts of an evaluation protocol,
    ``vqexplore.protocol.cached_evaluation``). A run whose checkpoints disagree on the codebook
    size raises ValueError.
    """
    from .models import load

    loader = loader or load
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise ValueError(f"{run_dir} has no checkpoints/step-N/ folders yet")
    if max_checkpoints and len(ckpts) > max_checkpoints:
        keep = np.unique(np.linspace(0, len(ckpts) - 1, max_checkpoints).round().astype(int))
        ckpts = [ckpts[i] for i in keep]
    columns, steps = [], []
    for step, path in ckpts:
        model = loader(path)
        counts = np.asarray(counter(path, model)) if counter is not None else usage_counts(model, images, batch_size)
        if columns and counts.shape != columns[0].shape:
            raise ValueError(f"{path} has {counts.shape[0]} codes but earlier checkpoints of the run "
                             f"have {columns[0].shape[0]}")
        columns.append(counts)
        steps.append(step)
    return UsageOverSteps(np.asarray(steps, dtype=np.int64), np.stack(columns, axis=1))


# ---------------------------------------------------------------------------------------------
# What a code means in pixels
# ---------------------------------------------------------------------------------------------

def receptive_field(model: nn.Module) -> tuple[int, float, int]:
    """(size, first_center, stride) in input pixels of one token of the encoder's output grid.

    Token (i, j) sees the input square of side ``size`` centred at
    ``(first_center + stride * i, first_center + stride * j)``. Computed from the encoder's
    convolutions in order (residual blocks only widen it); 34, 1.5, 4 for SimpleCNN with 2
    residual blocks. For a VQGAN this is the convolutions' reach only: its GroupNorm and
    attention layers make every token depend on the whole image.
    """
    size, jump, center = 1, 1, 0.0
    for module in list(model.encoder.modules()) + list(model.pre_quant.modules()):
        if isinstance(module, nn.Conv2d):
            k, s, p = module.kernel_size[0], module.stride[0], module.padding[0]
            center += ((k - 1) / 2 - p) * jump
            size += (k - 1) * jump
            jump *= s
    return size, center, jump


@dataclass
class CodeGallery:
    """Image patches the encoder maps to one code.

    patches: uint8 (N, S, S, 3) receptive-field crops (S = receptive field size, outside the image
    filled grey), the token's own cell outlined; locations: (N, 3) int (image, row, col) of each
    token; distances: (N,) distance of each token's encoder output to the code (closest first);
    count: how many tokens of the sample use the code (>= N); tile: uint8 decoded image of a grid
    filled with the code.
    """

    code: int
    count: int
    patches: np.ndarray
    locations: np.ndarray
    distances: np.ndarray
    tile: np.ndarray
    receptive_field: int


@torch.no_grad()
def decoded_tile(model: nn.Module, code: int, grid: int = 4) -> np.ndarray:
    """What the decoder makes of a (grid x grid) token grid filled with ``code``: uint8
    (grid*f, grid*f, 3), f = ``model.downsample``."""
    from .data import tensor_to_image

    if not 0 <= int(code) < model.codebook_size:
        raise ValueError(f"code must lie in [0, {model.codebook_size}), got {code}")
    with eval_mode(model):
        ids = torch.full((1, grid, grid), int(code), dtype=torch.int64, device=device_of(model))
        return tensor_to_image(model.decode_indices(ids)[0].clamp(-1, 1).cpu())


def _outline(patch: np.ndarray, top: int, left: int, size: int, color=(255, 0, 255)) -> None:
    """Draw a 1-pixel rectangle outline in place (clipped to the patch)."""
    h, w = patch.shape[:2]
    r0, r1 = max(top - 1, 0), min(top + size, h - 1)
    c0, c1 = max(left - 1, 0), min(left + size, w - 1)
    patch[r0, c0:c1 + 1] = color
    patch[r1, c0:c1 + 1] = color
    patch[r0:r1 + 1, c0] = color
    patch[r0:r1 + 1, c1] = color


@torch.no_grad()
def code_gallery(model: nn.Module, images: Tensor, code: int, *, max_patches: int = 24,
                 tile_grid: int = 4, outline: bool = True, encoded: EncodedSample | None = None,
                 batch_size: int = 64) -> CodeGallery:
    """Receptive-field crops of ``images`` (B, 3, H, W) in [-1, 1] whose tokens the encoder maps
    to ``code``, the most typical first (encoder output closest to the code), and the code's
    decoded tile. ``encoded``: :func:`encode_sample` of the same images, to skip the model pass.
    A code never used on these images gives an empty gallery with count 0."""
    from .data import tensor_to_image

    code = int(code)
    if not 0 <= code < model.codebook_size:
        raise ValueError(f"code must lie in [0, {model.codebook_size}), got {code}")
    if encoded is None:
        encoded = encode_sample(model, images, batch_size)
    vector = model.codebook_vectors()[code].detach().float().cpu()
    ids_t = torch.from_numpy(encoded.indices)
    where = torch.nonzero(ids_t == code)  # (n, 3) image, row, col
    count = int(where.shape[0])
    size, first, stride = receptive_field(model)
    from .nets import global_layers
    if global_layers(model.encoder):
        # Every token sees the whole image (attention, GroupNorm) and the convolutions alone reach
        # hundreds of pixels: show the token's cell with one cell of context around it.
        size, first = 3 * stride, (stride - 1) / 2
    if count:
        lat = torch.from_numpy(encoded.latents)[where[:, 0], where[:, 1], where[:, 2]]
        d = (lat - vector).norm(dim=-1)
        order = torch.argsort(d)[:max_patches]
        where, d = where[order], d[order]
    else:
        d = torch.zeros(0)
    pad = size  # generous: crops near the border read grey
    patches = []
    cache: dict[int, np.ndarray] = {}
    for b, i, j in where.tolist():
        if b not in cache:
            img = tensor_to_image(images[b].clamp(-1, 1))
            cache[b] = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), constant_values=128)
        top = int(round(first + stride * i - (size - 1) / 2)) + pad
        left = int(round(first + stride * j - (size - 1) / 2)) + pad
        patch = cache[b][top:top + size, left:left + size].copy()
        if outline:
            # The token's own stride x stride cell, centred in the crop.
            cell = int(round((size - stride) / 2))
            _outline(patch, cell, cell, stride)
        patches.append(patch)
    patches_arr = np.stack(patches) if patches else np.zeros((0, size, size, 3), np.uint8)
    return CodeGallery(code, count, patches_arr, where.numpy().astype(np.int64).reshape(-1, 3),
                       d.numpy().astype(np.float32), decoded_tile(model, code, tile_grid), size)


# ---------------------------------------------------------------------------------------------
# Comparison table in the study's layout
# ---------------------------------------------------------------------------------------------

_METRIC_COLUMNS = {k: METRIC[k].column for k in TABLE_METRICS}  # the registry: vqexplore.metricinfo
STUDY_COLUMNS = ("checkpoint", "quantizer", "levels", "code dim", "codebook size", "l2 norm", "entropy reg",
                 "ema", "remedy", *_METRIC_COLUMNS.values(), "bits/image", "bits/pixel", "metrics from")


def comparison_row(name: str, model: nn.Module, *, checkpoint_dir: str | Path | None = None,
                   images: Tensor | None = None, counts: np.ndarray | None = None, lpips=None,
                   saved_metrics: Mapping | None = None) -> dict:
    """One row of the comparison table (columns :data:`STUDY_COLUMNS`).

    Metrics come from the checkpoint's ``metrics.json`` (``trainer eval`` on the whole validation
    set) where present; the ones it lacks are computed live on ``images`` (usage, perplexity,
    dead codes from ``counts`` if given, PSNR, SSIM, and LPIPS when an ``lpips`` module is given;
    rFID needs many images and is never computed live). "metrics from" says which.
    """
    from .metrics import evaluate

    saved = dict(saved_metrics) if saved_metrics is not None else \
        (read_metrics(checkpoint_dir) or {}) if checkpoint_dir is not None else {}
    row = {"checkpoint": name, **describe_config(model.config)}
    values = {k: saved.get(k) for k in _METRIC_COLUMNS if isinstance(saved.get(k), (int, float))}
    sources = set()
    if values:
        n = saved.get("num_images")
        sources.add(f"{EVAL_METRICS} ({n} images)" if n else EVAL_METRICS)
    live_keys = [k for k in _METRIC_COLUMNS if k not in values and k != "rfid" and (k != "lpips" or lpips is not None)]
    if live_keys and images is not None:
        need_recon = bool({"psnr", "ssim", "lpips"} & set(live_keys))
        live = evaluate(model, batches(images, 64), device=device_of(model), lpips=lpips) if need_recon else {}
        if counts is None and not need_recon:
            counts = usage_counts(model, images)
        if counts is not None:  # the caller's counts on the same images: keep the page consistent
            live.update(usage_stats(counts).as_dict())
        for k in live_keys:
            if k in live and live[k] is not None:
                values[k] = live[k]
        sources.add(f"live ({images.shape[0]} val images)")
    for key, column in _METRIC_COLUMNS.items():
        row[column] = METRIC[key].display(values.get(key))
    row["metrics from"] = " + ".join(sorted(sources)) if sources else "none"
    return row


def protocol_row(name: str, config: Mapping, metrics: Mapping, *, source: str = "") -> dict:
    """One row of the comparison table from a checkpoint measured under an evaluation protocol
    (``vqexplore.protocol.ProtocolResult.metrics``): every number from that one measurement, bits per
    image and per pixel the entropy rate (tokens x the entropy of the token distribution)."""
    row = {"checkpoint": name, **describe_config(config)}
    for key, column in _METRIC_COLUMNS.items():
        value = metrics.get(key)
        value = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        row[column] = 100.0 * value if key == "usage" and value is not None else value
    row["bits/image"] = metrics.get("bits_per_image_entropy")
    row["bits/pixel"] = metrics.get("bits_per_pixel_entropy")
    row["metrics from"] = source or f"protocol {metrics.get('protocol_key', '?')} ({metrics.get('num_images')} images)"
    return row


def comparison_table(rows: Sequence[Mapping]):
    """pandas DataFrame of :func:`comparison_row` rows, columns in the study's order."""
    import pandas as pd

    frame = pd.DataFrame(list(rows), columns=list(STUDY_COLUMNS))
    return frame


# ---------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------

def training_curves(run_dir: str | Path | None = None, rows: Sequence[Mapping] | None = None):
    """Long-format pandas DataFrame (columns step, split, metric, value) of a run's
    ``metrics.jsonl`` (or of ``rows``), sorted by step; a half-written last line is skipped.
    Rows without a "split" count as "train"."""
    import pandas as pd

    if rows is None:
        rows = read_run_metrics(run_dir) if run_dir is not None else []
    records = []
    for row in rows:
        if not isinstance(row.get("step"), (int, float)):
            continue
        split = str(row.get("split", "train"))
        for metric, value in flatten(row, sep="/").items():
            finite = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
            if not finite or metric in ("step", "time", "epoch", "elapsed"):
                continue
            records.append((int(row["step"]), split, metric, float(value)))
    frame = pd.DataFrame.from_records(records, columns=["step", "split", "metric", "value"])
    return frame.sort_values(["metric", "split", "step"], kind="stable").reset_index(drop=True)


_CURVE_ORDER = ("usage", "perplexity", "dead_codes", "normalized_entropy", "psnr", "ssim", "lpips", "rfid")


# The VQGAN stage's generator/discriminator losses and logits (signed: hinge losses and logits go
# below 0), plotted together in their own panel, apart from the log-scale reconstruction losses.
ADVERSARIAL_CURVES = ("gen_loss", "disc_loss", "logits_real", "logits_fake")


def curve_groups(frame) -> dict[str, list[str]]:
    """Panels for a :func:`training_curves` frame: all losses together ("losses"), the VQGAN
    stage's adversarial losses and logits ("adversarial"), then one panel per other metric
    (usage, perplexity, ..., psnr, ssim, then the rest such as adaptive_weight, lr), since their
    scales differ by orders of magnitude. Bookkeeping columns are left out."""
    metrics = sorted(frame["metric"].unique()) if len(frame) else []
    adversarial = [m for m in ADVERSARIAL_CURVES if m in metrics]
    losses = [m for m in metrics if m not in adversarial
              and ("loss" in m.lower() or m.lower() in ("codebook", "commitment", "entropy"))]
    rest = [m for m in metrics if m not in losses and m not in adversarial
            and m.lower() not in ("codebook_size", "num_images")]
    rest.sort(key=lambda m: (_CURVE_ORDER.index(m.lower()) if m.lower() in _CURVE_ORDER else len(_CURVE_ORDER), m))
    groups = {"losses": losses} if losses else {}
    if adversarial:
        groups["adversarial"] = adversarial
    groups.update({m: [m] for m in rest})
    return groups


def ema_smooth(values: Sequence[float], weight: float) -> np.ndarray:
    """TensorBoard's scalar smoothing: an exponential moving average with weight ``weight`` in
    [0, 1) (0: no smoothing), debiased so the first points are not pulled towards 0
    (``smoothed_i = ema_i / (1 - weight ** (i + 1))``). Non-finite values pass through unchanged."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    v = np.asarray(values, dtype=np.float64)
    out = v.copy()
    if weight == 0.0:
        return out
    last, n = 0.0, 0
    for i, x in enumerate(v):
        if not np.isfinite(x):
            continue
        last = last * weight + (1.0 - weight) * x
        n += 1
        out[i] = last / (1.0 - weight ** n)
    return out


def most_used_codes(counts, n: int = 10) -> list[tuple[int, int]]:
    """The ``n`` most used codes as (code id, count), most used first; codes never used (count 0)
    are never listed, so a collapsed codebook may give fewer than ``n``."""
    c = np.asarray(counts).reshape(-1)
    order = np.argsort(-c, kind="stable")[:n]
    return [(int(i), int(c[i])) for i in order if c[i] > 0]


def sample_grids(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the sample grids a run writes while training (``RunLayout.sample(step)``:
    validation originals over their reconstructions), oldest first."""
    from .runlayout import RunLayout, step_of

    folder = RunLayout(run_dir).samples
    found = []
    for path in folder.glob("*.png") if folder.is_dir() else []:
        step = step_of(path.stem)
        if step is not None:
            found.append((step, path))
    return sorted(found)
