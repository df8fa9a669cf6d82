"""2-D layouts of a codebook (UMAP with exact neighbours, or PCA), optionally with encoder
outputs projected alongside, and a disk cache keyed by the weights' content hash.

:func:`project_codebook` computes a layout; :func:`cached_projection` keeps it in
``vqexplore.utils.cache_dir()/projections`` so a second call (another process, the other app)
loads it in milliseconds; :func:`encoder_outputs` samples the encoder outputs (in code space)
to project with the codes.

:func:`store_projection` writes the apps' default layout (:func:`default_params`) beside a checkpoint
(``CheckpointFiles.projection``, what ``trainer export`` and ``trainer eval`` do), recording the
parameters and the weights' sha256; :func:`cached_projection` reads it from there first, so a fresh
server never recomputes it. A stored layout of other parameters or other weights (stale), or a file
that cannot be read, is ignored and the layout computed again.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from .hub import WEIGHTS_NAME
from .runlayout import CheckpointFiles
from .utils import cache_dir, write_atomic

if TYPE_CHECKING:  # torch is imported where a layout is computed: a stored one is read without it
    from torch import Tensor, nn

    from .encoding import EncodedSample

PROJECTION_METHODS = ("umap", "pca")
# Bumped whenever the projection code changes what it returns, so stale disk caches are ignored.
_PROJECTION_VERSION = 1



def encoder_outputs(model: nn.Module, images: Tensor, max_points: int = 2048, seed: int = 0,
                    batch_size: int = 64, encoded: EncodedSample | None = None) -> np.ndarray:
    """A random sample of encoder outputs in code space: float32 (M, D), M <= max_points.

    These are the vectors the quantizer compares with the codebook, so they can be projected
    together with ``model.codebook_vectors()``.
    """
    if encoded is None:
        from .encoding import encode_sample

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
    stored: bool = False  # read from the checkpoint folder (``store_projection``), not computed or cached


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
                opts = {k: v for k, v in old.targetoptions.items() if k in ("parallel", "fastmath", "nogil",
                                                                            "error_model")}
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
          init: str | None = None, dims: int = 2) -> np.ndarray:
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
        reducer = umap.UMAP(n_neighbors=k, min_dist=min_dist, n_components=dims, metric="euclidean",
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


def default_params(codebook_size: int) -> dict:
    """The layout apps open on, for a codebook of ``codebook_size`` codes: the keyword arguments of
    :func:`cached_projection` (2-D UMAP, 15 neighbours, min_dist 0.1, :func:`default_seed`,
    :func:`default_epochs`). ``trainer export`` / ``eval`` store this one beside a checkpoint."""
    k = int(codebook_size)
    return {"method": "umap", "n_neighbors": 15, "min_dist": 0.1, "seed": default_seed(k),
            "n_epochs": default_epochs(k), "dims": 2}


def project_codebook(vectors: np.ndarray | Tensor, method: str = "umap", *, latents: np.ndarray | None = None,
                     n_neighbors: int = 15, min_dist: float = 0.1, seed: int | None = 0,
                     n_epochs: int | None = None, dims: int = 2) -> Projection:
    """2-D (or, ``dims=3``, 3-D) layout of (K, D) codebook vectors, optionally with (M, D) encoder
    outputs: ``codes`` (K, dims), ``latents`` (M, dims).

    method "umap": UMAP (umap-learn) with exact neighbours from scikit-learn (``precomputed_knn``),
    codes and latents fitted together; "pca": the codes' first two principal components, latents
    projected onto them. ``seed=None`` lets UMAP run in parallel (not reproducible).
    """
    if method not in PROJECTION_METHODS:
        raise ValueError(f"method must be one of {', '.join(PROJECTION_METHODS)}, got {method!r}")
    codes = np.asarray(vectors.detach().cpu() if hasattr(vectors, "detach") else vectors, dtype=np.float32)
    if codes.ndim != 2 or codes.shape[0] < 2:
        raise ValueError(f"vectors must be (K, D) with K >= 2, got {codes.shape}")
    lat = None if latents is None else np.asarray(latents, dtype=np.float32)
    if lat is not None and (lat.ndim != 2 or lat.shape[1] != codes.shape[1]):
        raise ValueError(f"latents must be (M, {codes.shape[1]}), got {lat.shape}")
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    t0 = time.perf_counter()
    params = {"n_neighbors": n_neighbors, "min_dist": min_dist, "seed": seed, "n_epochs": n_epochs} \
        if method == "umap" else {}
    if codes.shape[1] < dims:  # a 1-D (or 2-D, for 3-D) codebook: pad the missing axes with zeros
        pad = dims - codes.shape[1]
        codes2 = np.concatenate([codes, np.zeros((codes.shape[0], pad), codes.dtype)], axis=1)
        lat2 = None if lat is None else np.concatenate([lat, np.zeros((lat.shape[0], pad), lat.dtype)], axis=1)
        if codes.shape[1] == dims - 1 and method == "umap":
            method, params = "pca", {"note": f"codes are {codes.shape[1]}-D: shown as they are"}
    elif method == "pca" or codes.shape[1] == dims:
        mean = codes.mean(0, keepdims=True)
        # Principal axes from the SVD of the centred codebook (numpy only: no sklearn import).
        _, _, vt = np.linalg.svd(codes - mean, full_matrices=False)
        axes = vt[:dims].T
        codes2 = (codes - mean) @ axes
        lat2 = None if lat is None else (lat - mean) @ axes
        if method == "umap":
            method = "pca"  # 2-D codes need no UMAP; say what was actually done
            params = {"note": f"codes are {dims}-D: shown as they are (PCA rotation)"}
    else:
        both = codes if lat is None else np.concatenate([codes, lat])
        emb = _umap(both, n_neighbors, min_dist, seed, n_epochs, dims=dims)
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


def _key_parts(checkpoint_dir, images, max_latents, method, n_neighbors, min_dist, seed, n_epochs, dims) -> dict:
    key_parts = {"v": _PROJECTION_VERSION, "weights": weights_fingerprint(checkpoint_dir), "method": method,
                 "n_neighbors": n_neighbors, "min_dist": min_dist, "seed": seed, "n_epochs": n_epochs}
    if images is not None:
        key_parts.update(images=_images_digest(images), max_latents=max_latents)
    if dims != 2:  # 2-D keys stay as they were, so existing caches remain valid
        key_parts["dims"] = dims
    return key_parts


def _read_npz(path: Path, key_parts: dict | None = None) -> Projection | None:
    """The projection saved at ``path``; None when it is missing, unreadable or (``key_parts``
    given) was made from other weights or parameters."""
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            if key_parts is not None and meta.get("key") != key_parts:
                return None
            codes = np.asarray(f["codes"], dtype=np.float32)
            latents = np.asarray(f["latents"], dtype=np.float32) if "latents" in f.files else None
            dims = int((meta.get("key") or {}).get("dims", 2))
            if codes.ndim != 2 or codes.shape[1] != dims or not np.isfinite(codes).all():
                return None
            return Projection(codes, latents, str(meta["method"]), dict(meta["params"]), float(meta["seconds"]),
                              from_cache=True)
    except Exception:  # missing, truncated, not an npz, other keys: recomputed by the caller
        return None


def _read_stored(checkpoint_dir: str | Path, key_parts: dict) -> Projection | None:
    """The layout stored beside the checkpoint for ``key_parts`` (``stored=True``), else None."""
    proj = _read_npz(CheckpointFiles(checkpoint_dir).projection, key_parts)
    if proj is not None:
        proj.stored = True
    return proj


def _write_npz(path: Path, proj: Projection, key_parts: dict, durable: bool = False) -> None:
    arrays = {"codes": proj.codes, "meta": np.array(json.dumps(
        {"method": proj.method, "params": proj.params, "seconds": proj.seconds, "key": key_parts}))}
    if proj.latents is not None:
        arrays["latents"] = proj.latents
    # atomic: concurrent readers see the old or the new file, never half
    write_atomic(path, lambda f: np.savez(f, **arrays), durable=durable)


def stored_projection(checkpoint_dir: str | Path, method: str = "umap", *, n_neighbors: int = 15,
                      min_dist: float = 0.1, seed: int | None = 0, n_epochs: int | None = None,
                      dims: int = 2) -> Projection | None:
    """The layout stored beside the checkpoint (``CheckpointFiles.projection``) when it was made from
    these weights (sha256) with these parameters; None otherwise (missing, stale or unreadable)."""
    try:
        key_parts = _key_parts(checkpoint_dir, None, 0, method, n_neighbors, min_dist, seed, n_epochs, dims)
    except OSError:
        return None
    return _read_stored(checkpoint_dir, key_parts)


def store_projection(checkpoint_dir: str | Path, model, **params) -> Projection:
    """Compute (or take from the caches) the layout of ``params`` (over :func:`default_params`: those
    not given are the apps' defaults) of the checkpoint's codebook and write it beside the checkpoint,
    recording the parameters and the weights' sha256. ``model``: the checkpoint's model or a function
    returning it (called only when the layout has to be computed)."""
    params = {**default_params(_codebook_size(checkpoint_dir, model)), **params}
    proj = cached_projection(checkpoint_dir, model, **params)
    if not proj.stored:
        key_parts = _key_parts(checkpoint_dir, None, 0, **params)
        _write_npz(CheckpointFiles(checkpoint_dir).projection, proj, key_parts, durable=True)
    return proj


def _codebook_size(checkpoint_dir: str | Path, model) -> int:
    from .hub import CONFIG_NAME, read_config

    try:
        return int(read_config(Path(checkpoint_dir) / CONFIG_NAME)["codebook_size"])
    except Exception:
        return int(_model(model).codebook_size)


def _model(model):
    """``model``, or what the function ``model`` returns (a model has parameters; a loader does not)."""
    return model if hasattr(model, "parameters") else model()


def cached_projection(checkpoint_dir: str | Path, model, method: str = "umap", *,
                      images: Tensor | None = None, max_latents: int = 2048, n_neighbors: int = 15,
                      min_dist: float = 0.1, seed: int | None = 0, n_epochs: int | None = None,
                      cache: Path | None = None, encoded: EncodedSample | None = None, dims: int = 2) -> Projection:
    """:func:`project_codebook` of ``model`` (loaded from ``checkpoint_dir``), kept on disk.

    ``model``: the model, or a function of no arguments returning it (called only when the layout
    has to be computed: one stored beside the checkpoint or cached needs no model). Without encoder
    outputs, a layout stored beside the checkpoint (:func:`store_projection`) for these weights and
    parameters is read first (``stored=True``).

    The key is the sha256 of the weights file plus the method, its parameters and (when encoder
    outputs are projected too: ``images`` given, ``encoded`` optionally their
    :func:`encode_sample`) a digest of the images. A second call, in any
    process, loads the saved ``.npz`` (no pickle) instead of recomputing. An unwritable cache
    folder only means the result is not saved.
    """
    key_parts = _key_parts(checkpoint_dir, images, max_latents, method, n_neighbors, min_dist, seed, n_epochs, dims)
    if images is None:
        stored = _read_stored(checkpoint_dir, key_parts)
        if stored is not None:
            return stored
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:32]
    folder = (cache or cache_dir()) / "projections"
    path = folder / f"{key}.npz"
    if path.is_file():
        hit = _read_npz(path)
        if hit is not None:
            return hit
        # a damaged cache entry is recomputed (and overwritten) below
    import torch

    model = _model(model)
    latents = encoder_outputs(model, images, max_latents, seed or 0, encoded=encoded) if images is not None else None
    with torch.no_grad():
        vectors = model.codebook_vectors().detach().float().cpu().numpy()
    proj = project_codebook(vectors, method, latents=latents, n_neighbors=n_neighbors,
                            min_dist=min_dist, seed=seed, n_epochs=n_epochs, dims=dims)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_npz(path, proj, key_parts)
    except OSError:
        pass
    return proj
