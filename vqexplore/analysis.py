"""What the apps show about a tokenizer, computed by plain functions (no UI code here).

Everything takes a :class:`vqexplore.VQModel` and a fixed sample of images (B, 3, H, W) in
[-1, 1] (``vqexplore.data.validation_batch()``), and returns numpy arrays, dataclasses or pandas
frames that are cheap to pickle, so the apps can cache them (``st.cache_data``) and tests can
call them directly:

- code usage: :func:`encode_indices`, :func:`usage_counts`, :func:`usage_stats`,
  :func:`usage_over_steps` (a run's checkpoints, codes x steps);
- codebook projections: :func:`project_codebook` (UMAP with exact neighbours, or PCA),
  :func:`encoder_outputs` (encoder outputs in code space, to project with the codes) and
  :func:`cached_projection`, which keeps results on disk keyed by the weights' hash;
- what a code means: :func:`receptive_field`, :func:`code_gallery` (image patches the encoder
  maps to a code, and the code's decoded tile);
- comparisons: :func:`comparison_row` / :func:`comparison_table` in the study's layout;
- training curves: :func:`training_curves` from ``<run>/metrics.jsonl``.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .describe import describe_config
from .hub import WEIGHTS_NAME, list_checkpoints, read_metrics, read_run_metrics
from .metrics import CodebookStats, code_counts, codebook_stats
from .utils import cache_dir, eval_mode, flatten, write_atomic

__all__ = [
    "encode_indices", "usage_counts", "usage_stats", "EncodedSample", "encode_sample", "UsageOverSteps", "usage_over_steps",
    "encoder_outputs", "Projection", "project_codebook", "PROJECTION_METHODS", "default_seed",
    "default_epochs", "warm_up_projection",
    "weights_fingerprint", "cache_dir", "cached_projection",
    "receptive_field", "CodeGallery", "code_gallery", "decoded_tile",
    "STUDY_COLUMNS", "describe_config", "comparison_row", "comparison_table",
    "training_curves", "curve_groups",
]

PROJECTION_METHODS = ("umap", "pca")
# Bumped whenever the projection code changes what it returns, so stale disk caches are ignored.
_PROJECTION_VERSION = 1


def _batches(images: Tensor, batch_size: int):
    for start in range(0, images.shape[0], batch_size):
        yield images[start:start + batch_size]


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------------------
# Code usage
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def encode_indices(model: nn.Module, images: Tensor, batch_size: int = 64) -> np.ndarray:
    """Code ids of every token: images (B, 3, H, W) in [-1, 1] -> int64 (B, H/4, W/4)."""
    if images.dim() != 4:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    device = _device_of(model)
    with eval_mode(model):
        out = [model.encode(x.to(device)).cpu() for x in _batches(images, batch_size)]
    return torch.cat(out).numpy().astype(np.int64)


def usage_counts(model: nn.Module, images: Tensor, batch_size: int = 64) -> np.ndarray:
    """How often each code is chosen on ``images``: (K,) int64 (K = ``model.codebook_size``)."""
    ids = encode_indices(model, images, batch_size)
    return code_counts(torch.from_numpy(ids), model.codebook_size).numpy()


def usage_stats(counts: np.ndarray | Tensor) -> CodebookStats:
    """Usage, perplexity, dead codes and normalised entropy of a (K,) count
    (``vqexplore.metrics.codebook_stats``)."""
    return codebook_stats(torch.as_tensor(np.asarray(counts), dtype=torch.int64))


@dataclass
class EncodedSample:
    """A sample of images through the encoder and quantizer.

    indices: int64 (B, h, w) code ids; latents: float32 (B, h, w, D) encoder outputs in code
    space (what the nearest-code search compares with ``model.codebook_vectors()``).
    """

    indices: np.ndarray
    latents: np.ndarray

    def counts(self, codebook_size: int) -> np.ndarray:
        """(K,) int64 usage counts."""
        return code_counts(torch.from_numpy(self.indices), codebook_size).numpy()


@torch.no_grad()
def encode_sample(model: nn.Module, images: Tensor, batch_size: int = 64) -> EncodedSample:
    """One pass of ``images`` (B, 3, H, W) in [-1, 1] through encoder and quantizer, keeping
    both the code ids and the encoder outputs (in code space), so that counts, galleries and
    projected encoder outputs need no second pass."""
    device = _device_of(model)
    ids, lats = [], []
    with eval_mode(model):
        for x in _batches(images, batch_size):
            z = model.encode_latents(x.to(device))
            ids.append(model.quantizer(z).indices.cpu())
            tokens = z.permute(0, 2, 3, 1).float()
            shape = tokens.shape
            lats.append(model.quantizer.to_code_space(tokens.reshape(-1, shape[-1])).reshape(shape).cpu())
    return EncodedSample(torch.cat(ids).numpy().astype(np.int64), torch.cat(lats).numpy().astype(np.float32))


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
                     loader: Callable | None = None, batch_size: int = 64) -> UsageOverSteps:
    """Per-code usage of every checkpoint of a run on the same images: codes x steps.

    ``max_checkpoints`` keeps that many, evenly spread over the run (always the first and the
    last). ``loader(path) -> VQModel`` defaults to :func:`vqexplore.load`. A run whose
    checkpoints disagree on the codebook size raises ValueError.
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
        counts = usage_counts(model, images, batch_size)
        if columns and counts.shape != columns[0].shape:
            raise ValueError(f"{path} has {counts.shape[0]} codes but earlier checkpoints of the run "
                             f"have {columns[0].shape[0]}")
        columns.append(counts)
        steps.append(step)
    return UsageOverSteps(np.asarray(steps, dtype=np.int64), np.stack(columns, axis=1))


# ---------------------------------------------------------------------------------------------
# Projections of the codebook
# ---------------------------------------------------------------------------------------------

def encoder_outputs(model: nn.Module, images: Tensor, max_points: int = 2048, seed: int = 0,
                    batch_size: int = 64, encoded: EncodedSample | None = None) -> np.ndarray:
    """A random sample of encoder outputs in code space: float32 (M, D), M <= max_points.

    These are the vectors the quantizer compares with the codebook, so they can be projected
    together with ``model.codebook_vectors()``.
    """
    if encoded is None:
        encoded = encode_sample(model, images, batch_size)
    tokens = encoded.latents.reshape(-1, encoded.latents.shape[-1])
    if tokens.shape[0] > max_points:
        pick = np.sort(np.random.default_rng(seed).choice(tokens.shape[0], max_points, replace=False))
        tokens = tokens[pick]
    return np.ascontiguousarray(tokens, dtype=np.float32)


@dataclass
class Projection:
    """2-D layout of a codebook. codes: float32 (K, 2); latents: float32 (M, 2) or None (encoder
    outputs projected with the codes); method: "umap" or "pca"; params: what produced it;
    seconds: how long the projection took when it was computed (not when loaded from cache)."""

    codes: np.ndarray
    latents: np.ndarray | None
    method: str
    params: dict = field(default_factory=dict)
    seconds: float = 0.0
    from_cache: bool = False


def _exact_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours (each point first, as UMAP expects): (N, k) int64 ids and
    float32 distances. Brute force in BLAS: ~1 s for 16k x 64 on 2 cores, versus about a
    minute of numba compilation for pynndescent's approximate search."""
    from sklearn.neighbors import NearestNeighbors

    nn_ = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean").fit(x)
    dists, ids = nn_.kneighbors(x)
    return ids.astype(np.int64), dists.astype(np.float32)


_NUMBA_CACHE_LOCK = threading.Lock()
_NUMBA_CACHE_DONE = False


def _cache_umap_kernels() -> None:
    """Let numba keep umap-learn's uncached kernels in its on-disk cache.

    umap-learn jit-compiles its fuzzy-set and layout kernels without ``cache=True``, which costs
    tens of seconds in every fresh process on 2 cores. Re-jitting the same Python functions with
    ``cache=True`` (same options) makes that a one-time cost per installation. Best effort: on
    any surprise (another umap version), umap runs unchanged.
    """
    global _NUMBA_CACHE_DONE
    with _NUMBA_CACHE_LOCK:
        if _NUMBA_CACHE_DONE:
            return
        _NUMBA_CACHE_DONE = True
        try:
            import numba
            import umap.layouts as layouts
            import umap.umap_ as umap_

            def recache(module, name):
                old = getattr(module, name)
                if not hasattr(old, "py_func") or old.targetoptions.get("cache"):
                    return
                opts = {k: v for k, v in old.targetoptions.items() if k in ("parallel", "fastmath", "nogil", "error_model")}
                new = numba.njit(cache=True, locals=dict(getattr(old, "locals", {}) or {}), **opts)(old.py_func)
                setattr(module, name, new)

            for name in ("smooth_knn_dist", "compute_membership_strengths"):
                recache(umap_, name)
            for name in ("_nb_optimize_layout_euclidean_single_epoch",
                         "_nb_optimize_layout_euclidean_single_epoch_parallel"):
                recache(layouts, name)
        except Exception:  # pragma: no cover - depends on the installed umap version
            pass


def _umap(x: np.ndarray, n_neighbors: int, min_dist: float, seed: int | None, n_epochs: int | None,
          init: str | None = None) -> np.ndarray:
    import warnings

    _cache_umap_kernels()
    import umap

    n = x.shape[0]
    # spectral init solves an eigenproblem that takes longer than the whole layout above ~4k
    # points; PCA init is deterministic and fast.
    init = init or ("pca" if n > 4096 else "spectral")
    k = max(2, min(n_neighbors, n - 1))
    ids, dists = _exact_knn(x, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs/random_state and disconnected-vertex notes
        reducer = umap.UMAP(n_neighbors=k, min_dist=min_dist, n_components=2, metric="euclidean",
                            precomputed_knn=(ids, dists), random_state=seed, n_epochs=n_epochs,
                            init=init, low_memory=True)
        return reducer.fit_transform(x).astype(np.float32)


def warm_up_projection() -> None:
    """Import umap-learn and scikit-learn and load UMAP's compiled kernels (a tiny fit through
    both the reproducible and the parallel path), so that a later large projection pays only
    for its own work. Apps call this in a background thread at start-up."""
    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    for seed in (0, None):
        _umap(x, 15, 0.1, seed, 5, init="pca")


def default_seed(codebook_size: int) -> int | None:
    """The UMAP seed apps use: 0 (reproducible) up to 4096 codes; None above, which lets UMAP's
    layout run on all cores (about 2x faster on 2 cores, not bit-reproducible; the result is
    cached on disk, so a user still always sees the same layout for the same weights)."""
    return 0 if codebook_size <= 4096 else None


def default_epochs(num_points: int) -> int | None:
    """UMAP optimisation epochs apps use: umap-learn's own default (None: 500 below 10k points,
    200 above) up to 8192 points; 100 above, which halves the layout time of a 16k codebook
    (~5 s instead of ~10 s on 2 busy cores) and, starting from the PCA initialisation, keeps
    the clusters and neighbourhoods that the overview shows."""
    return None if num_points <= 8192 else 100


def project_codebook(vectors: np.ndarray | Tensor, method: str = "umap", *, latents: np.ndarray | None = None,
                     n_neighbors: int = 15, min_dist: float = 0.1, seed: int | None = 0,
                     n_epochs: int | None = None) -> Projection:
    """2-D layout of (K, D) codebook vectors, optionally with (M, D) encoder outputs.

    method "umap": UMAP (umap-learn) with exact neighbours from scikit-learn (``precomputed_knn``),
    codes and latents fitted together; "pca": the codes' first two principal components, latents
    projected onto them. ``seed=None`` lets UMAP run in parallel (not reproducible).
    """
    if method not in PROJECTION_METHODS:
        raise ValueError(f"method must be one of {', '.join(PROJECTION_METHODS)}, got {method!r}")
    codes = np.asarray(vectors.detach().cpu() if isinstance(vectors, Tensor) else vectors, dtype=np.float32)
    if codes.ndim != 2 or codes.shape[0] < 2:
        raise ValueError(f"vectors must be (K, D) with K >= 2, got {codes.shape}")
    lat = None if latents is None else np.asarray(latents, dtype=np.float32)
    if lat is not None and (lat.ndim != 2 or lat.shape[1] != codes.shape[1]):
        raise ValueError(f"latents must be (M, {codes.shape[1]}), got {lat.shape}")
    t0 = time.perf_counter()
    params = {"n_neighbors": n_neighbors, "min_dist": min_dist, "seed": seed, "n_epochs": n_epochs} \
        if method == "umap" else {}
    if codes.shape[1] == 1:  # a 1-D codebook: lay it out on a line
        codes2 = np.concatenate([codes, np.zeros_like(codes)], axis=1)
        lat2 = None if lat is None else np.concatenate([lat, np.zeros_like(lat)], axis=1)
    elif method == "pca" or codes.shape[1] == 2:
        mean = codes.mean(0, keepdims=True)
        # Principal axes from the SVD of the centred codebook (numpy only: no sklearn import).
        _, _, vt = np.linalg.svd(codes - mean, full_matrices=False)
        axes = vt[:2].T
        codes2 = (codes - mean) @ axes
        lat2 = None if lat is None else (lat - mean) @ axes
        if method == "umap":
            method = "pca"  # 2-D codes need no UMAP; say what was actually done
            params = {"note": "codes are 2-D: shown as they are (PCA rotation)"}
    else:
        both = codes if lat is None else np.concatenate([codes, lat])
        emb = _umap(both, n_neighbors, min_dist, seed, n_epochs)
        codes2, lat2 = emb[:codes.shape[0]], (None if lat is None else emb[codes.shape[0]:])
    return Projection(codes2.astype(np.float32), None if lat2 is None else lat2.astype(np.float32),
                      method, params, time.perf_counter() - t0)


_FINGERPRINTS: dict[tuple, str] = {}


def weights_fingerprint(checkpoint_dir: str | Path) -> str:
    """sha256 of the checkpoint's model.safetensors (remembered per path, size and mtime)."""
    path = Path(checkpoint_dir) / WEIGHTS_NAME
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FINGERPRINTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _FINGERPRINTS[key] = h.hexdigest()
    return _FINGERPRINTS[key]


def _images_digest(images: Tensor) -> str:
    return hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def cached_projection(checkpoint_dir: str | Path, model: nn.Module, method: str = "umap", *,
                      images: Tensor | None = None, max_latents: int = 2048, n_neighbors: int = 15,
                      min_dist: float = 0.1, seed: int | None = 0, n_epochs: int | None = None,
                      cache: Path | None = None, encoded: EncodedSample | None = None) -> Projection:
    """:func:`project_codebook` of ``model`` (loaded from ``checkpoint_dir``), kept on disk.

    The key is the sha256 of the weights file plus the method, its parameters and (when encoder
    outputs are projected too: ``images`` given, ``encoded`` optionally their
    :func:`encode_sample`) a digest of the images. A second call, in any
    process, loads the saved ``.npz`` (no pickle) instead of recomputing. An unwritable cache
    folder only means the result is not saved.
    """
    key_parts = {"v": _PROJECTION_VERSION, "weights": weights_fingerprint(checkpoint_dir), "method": method,
                 "n_neighbors": n_neighbors, "min_dist": min_dist, "seed": seed, "n_epochs": n_epochs}
    if images is not None:
        key_parts.update(images=_images_digest(images), max_latents=max_latents)
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:32]
    folder = (cache or cache_dir()) / "projections"
    path = folder / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                latents = f["latents"] if "latents" in f.files else None
                meta = json.loads(str(f["meta"]))
                return Projection(f["codes"].copy(), None if latents is None else latents.copy(),
                                  meta["method"], meta["params"], meta["seconds"], from_cache=True)
        except Exception:
            pass  # a damaged cache entry is recomputed (and overwritten) below
    latents = encoder_outputs(model, images, max_latents, seed or 0, encoded=encoded) if images is not None else None
    with torch.no_grad():
        vectors = model.codebook_vectors().detach().float().cpu().numpy()
    proj = project_codebook(vectors, method, latents=latents, n_neighbors=n_neighbors,
                            min_dist=min_dist, seed=seed, n_epochs=n_epochs)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"codes": proj.codes, "meta": np.array(json.dumps(
            {"method": proj.method, "params": proj.params, "seconds": proj.seconds, "key": key_parts}))}
        if proj.latents is not None:
            arrays["latents"] = proj.latents
        # atomic: concurrent readers see the old or the new file, never half
        write_atomic(path, lambda f: np.savez(f, **arrays), durable=False)
    except OSError:
        pass
    return proj


# ---------------------------------------------------------------------------------------------
# What a code means in pixels
# ---------------------------------------------------------------------------------------------

def receptive_field(model: nn.Module) -> tuple[int, float, int]:
    """(size, first_center, stride) in input pixels of one token of the encoder's output grid.

    Token (i, j) sees the input square of side ``size`` centred at
    ``(first_center + stride * i, first_center + stride * j)``. Computed from the encoder's
    convolutions in order (residual blocks only widen it); 34, 1.5, 4 for SimpleCNN with 2
    residual blocks.
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
    (grid*4, grid*4, 3)."""
    from .data import tensor_to_image

    if not 0 <= int(code) < model.codebook_size:
        raise ValueError(f"code must lie in [0, {model.codebook_size}), got {code}")
    with eval_mode(model):
        ids = torch.full((1, grid, grid), int(code), dtype=torch.int64, device=_device_of(model))
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

STUDY_COLUMNS = ("checkpoint", "quantizer", "levels", "code dim", "codebook size", "l2 norm", "entropy reg",
                 "ema", "usage %", "perplexity", "dead codes", "PSNR", "SSIM", "LPIPS", "rFID", "metrics from")


_METRIC_COLUMNS = {"usage": "usage %", "perplexity": "perplexity", "dead_codes": "dead codes",
                   "psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "rfid": "rFID"}


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
        sources.add(f"metrics.json ({n} images)" if n else "metrics.json")
    live_keys = [k for k in _METRIC_COLUMNS if k not in values and k != "rfid" and (k != "lpips" or lpips is not None)]
    if live_keys and images is not None:
        need_recon = bool({"psnr", "ssim", "lpips"} & set(live_keys))
        live = evaluate(model, _batches(images, 64), device=_device_of(model), lpips=lpips) if need_recon else {}
        if counts is None and not need_recon:
            counts = usage_counts(model, images)
        if counts is not None:  # the caller's counts on the same images: keep the page consistent
            live.update(usage_stats(counts).as_dict())
        for k in live_keys:
            if k in live and live[k] is not None:
                values[k] = live[k]
        sources.add(f"live ({images.shape[0]} val images)")
    for key, column in _METRIC_COLUMNS.items():
        value = values.get(key)
        if key == "usage" and value is not None:
            value = 100.0 * float(value)
        row[column] = value
    row["metrics from"] = " + ".join(sorted(sources)) if sources else "none"
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


def curve_groups(frame) -> dict[str, list[str]]:
    """Panels for a :func:`training_curves` frame: all losses together ("losses"), then one
    panel per other metric (usage, perplexity, ..., psnr, ssim, then the rest such as lr),
    since their scales differ by orders of magnitude. Bookkeeping columns are left out."""
    metrics = sorted(frame["metric"].unique()) if len(frame) else []
    losses = [m for m in metrics if "loss" in m.lower() or m.lower() in ("codebook", "commitment", "entropy")]
    rest = [m for m in metrics if m not in losses and m.lower() not in ("codebook_size", "num_images")]
    rest.sort(key=lambda m: (_CURVE_ORDER.index(m.lower()) if m.lower() in _CURVE_ORDER else len(_CURVE_ORDER), m))
    groups = {"losses": losses} if losses else {}
    groups.update({m: [m] for m in rest})
    return groups
