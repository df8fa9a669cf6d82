"""The dashboard's cached computations: every heavy call into ``vqexplore`` goes through
``st.cache_resource`` (models, the image sample) or ``st.cache_data`` (counts, projections,
galleries, tables, surgery, alignments, rate-distortion points), keyed by the checkpoint path and a
cheap stamp of its weights file (size, mtime) so that a rewritten checkpoint is reloaded, and by
the validation sample."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from app import keys
from app.sources import REPO, weights_stamp
from vqexplore.errors import VQExploreError
from vqexplore.hub import Source

DEFAULT_SAMPLE = 64      # images of the sources with a choice of count (built-in crops, folders, datasets)
DEFAULT_IMAGE_SIZE = 64  # the study's resolution


@st.cache_resource(show_spinner=False, max_entries=16)
def load_model(path: str, stamp: tuple):
    import torch

    import vqexplore

    torch.set_grad_enabled(False)
    return vqexplore.load(path)


def model_of(p: Source):
    return load_model(p.path, weights_stamp(p.path))


@st.cache_resource(show_spinner=False, max_entries=8)
def validation_images(protocol):
    """The protocol's images (``vqexplore.protocol.Protocol.images``): (n, 3, size, size) in [-1, 1]."""
    return protocol.images()


def default_protocol():
    """The protocol the dashboard opens on: the photo corpus's held-out photos at 64 px, usage over the
    photos whole at 64-512 px (the README's tables and the demo's)."""
    from vqexplore.protocol import Protocol

    return Protocol.default(DEFAULT_IMAGE_SIZE)


def protocol():
    """The sidebar's evaluation protocol (``app.sidebar``); the default one until the sidebar has run."""
    from vqexplore.protocol import Protocol

    chosen = st.session_state.get(keys.PROTOCOL)
    return chosen if isinstance(chosen, Protocol) else default_protocol()


def sample():
    """The evaluation protocol the sidebar chose (``vqexplore.protocol.Protocol``, frozen and hashable):
    part of every cache key, so every number on every page is measured under it."""
    return protocol()


@st.cache_data(show_spinner=False, max_entries=64, ttl=30)
def protocol_images_count(protocol) -> int:
    """The protocol's number of images (raises VQExploreError when its source is unusable)."""
    return protocol.num_images()


def sample_size() -> int:
    """How many images the protocol measures on."""
    return int(protocol_images_count(protocol()))


@st.cache_data(show_spinner=False, max_entries=128)
def evaluation(path: str, stamp: tuple, protocol, with_lpips: bool = False):
    """The checkpoint measured under ``protocol`` (``vqexplore.protocol.cached_evaluation``: on disk per
    weights hash and protocol key, so a fresh server or a switch back reads it instead of measuring).
    Every number a page shows about a checkpoint comes from here."""
    from vqexplore.protocol import cached_evaluation

    # the model is loaded only when something must be measured (a result on disk needs none)
    return cached_evaluation(path, lambda: load_model(path, stamp), protocol,
                             lpips=lpips_module() if with_lpips else None, images=lambda: validation_images(protocol))


def evaluation_of(p: Source, with_lpips: bool | None = None):
    if with_lpips is None:
        with_lpips = lpips_module() is not None
    return evaluation(p.path, weights_stamp(p.path), protocol(), with_lpips)


@st.cache_data(show_spinner=False, max_entries=16)
def encoded(path: str, stamp: tuple, n):
    """The validation sample through encoder + quantizer (code ids and encoder outputs)."""
    from vqexplore import analysis

    return analysis.encode_sample(load_model(path, stamp), validation_images(n))


@st.cache_data(show_spinner=False, max_entries=128)
def _usage_on_disk(path: str, stamp: tuple, protocol) -> tuple[np.ndarray, int] | None:
    from vqexplore.protocol import cached_evaluation

    result = cached_evaluation(path, None, protocol, measure=False)
    return None if result is None else (result.counts, int(result.metrics["num_images"]))


def usage(path: str, stamp: tuple, n) -> tuple[np.ndarray, int]:
    """((K,) code counts, number of images) of the checkpoint under protocol ``n`` (its evaluation's).
    Counts do not depend on LPIPS: an evaluation on disk without it (stored beside the checkpoint,
    metrics.json, the cache) serves, before the evaluation with LPIPS is measured (or, without its
    weights, the same one). Reading one imports no torch and loads no model."""
    hit = _usage_on_disk(path, stamp, n)
    if hit is not None:
        return hit
    result = evaluation(path, stamp, n, lpips_module() is not None)
    return result.counts, int(result.metrics["num_images"])


def usage_counts(path: str, stamp: tuple, n) -> np.ndarray:
    """(K,) code counts of the checkpoint under protocol ``n`` (see :func:`usage`)."""
    return usage(path, stamp, n)[0]


@st.cache_data(show_spinner=False, max_entries=16)
def health(path: str, stamp: tuple, n, remedy_rows: dict | None = None):
    """Codebook health on the validation sample (``vqexplore.health``)."""
    from vqexplore.health import codebook_health
    from vqexplore.projection import encoder_outputs

    model, sample = load_model(path, stamp), encoded(path, stamp, n)
    return codebook_health(model, encoder_outputs(model, None, max_points=8192, encoded=sample),
                           usage_counts(path, stamp, n), remedy_rows)


def counts_of(p: Source) -> np.ndarray:
    return usage_counts(p.path, weights_stamp(p.path), sample())


def _projection_params(path: str, stamp: tuple, method: str, dims: int) -> dict:
    """The page's layout parameters: ``vqexplore.projection.default_params`` with its method and dimensions."""
    from vqexplore.projection import default_params

    return {**default_params(int(config_of(path, stamp)["codebook_size"])), "method": method, "dims": dims}


def projection_stored(path: str, stamp: tuple, method: str, dims: int = 2) -> bool:
    """Whether this layout is stored beside the checkpoint for these weights (``trainer export`` /
    ``eval`` wrote it): the page then needs neither umap-learn nor the model."""
    from vqexplore.projection import stored_projection

    return stored_projection(path, **_projection_params(path, stamp, method, dims)) is not None


@st.cache_data(show_spinner=False, max_entries=32)
def projection(path: str, stamp: tuple, method: str, with_latents: bool, n, dims: int = 2):
    """The codebook's layout (``vqexplore.projection.cached_projection``): read from beside the checkpoint
    when stored there for these weights, else from the disk cache, else computed (the model is loaded only then)."""
    from vqexplore.projection import cached_projection

    return cached_projection(path, lambda: load_model(path, stamp),
                             images=validation_images(n) if with_latents else None,
                             encoded=encoded(path, stamp, n) if with_latents else None,
                             **_projection_params(path, stamp, method, dims))


def warm_models(paths_and_stamps: list[tuple[str, tuple]]) -> None:
    """Load these checkpoints' models in a background thread (a page that only read results from disk
    loaded none): the next measurement, e.g. after the protocol's size changes, finds them loaded."""
    import threading

    def work():
        for path, stamp in paths_and_stamps:
            try:
                load_model(path, stamp)
            except Exception:  # only a speed-up: a broken checkpoint says so where it is used
                pass

    threading.Thread(target=work, name="vqexplore-warm-models", daemon=True).start()


@st.cache_resource(show_spinner=False)
def prewarm():
    """Once per server: import umap-learn / scikit-learn and load UMAP's compiled kernels in a
    background thread, while the first page loads its model and counts (about 5 s of imports
    on 2 cores that the first UMAP would otherwise wait for)."""
    import threading

    def work():
        try:
            from vqexplore import analysis

            analysis.warm_up_projection()
        except Exception:  # only a speed-up: any failure shows up later where it matters
            pass

    thread = threading.Thread(target=work, name="vqexplore-prewarm", daemon=True)
    thread.start()
    return thread


def comparison_row(path: str, stamp: tuple, label: str, n, with_lpips: bool) -> dict:
    """The Compare table's row: the checkpoint's evaluation under protocol ``n``."""
    from vqexplore import analysis

    result = evaluation(path, stamp, n, with_lpips)
    return analysis.protocol_row(label, config_of(path, stamp), result.metrics)


@st.cache_data(show_spinner=False, max_entries=256)
def config_of(path: str, stamp: tuple) -> dict:
    """The checkpoint's config.json (no weights loaded)."""
    from vqexplore.hub import CONFIG_NAME, read_config

    return read_config(Path(path) / CONFIG_NAME)


@st.cache_data(show_spinner=False, max_entries=256)
def code_gallery(path: str, stamp: tuple, code: int, n, max_patches: int):
    from vqexplore import analysis

    return analysis.code_gallery(load_model(path, stamp), validation_images(n), code, max_patches=max_patches,
                                 encoded=encoded(path, stamp, n))


@st.cache_data(show_spinner=False, max_entries=16)
def run_usage(run_dir: str, checkpoints: tuple, n, max_checkpoints: int):
    from vqexplore import analysis

    def loader(path):
        return load_model(str(path), weights_stamp(str(path)))

    def counter(path, model):
        return usage_counts(str(path), weights_stamp(str(path)), n)

    return analysis.usage_over_steps(run_dir, None, max_checkpoints=max_checkpoints, loader=loader, counter=counter)


@st.cache_data(show_spinner=False, ttl=60)
def weights_status() -> dict:
    """LPIPS / rFID weights on this machine (local files only: the dashboard never downloads, and a
    reachability check of the download hosts cost seconds of every fresh server's first page)."""
    from vqexplore.metrics import weights_status as status

    return status(network=False)


@st.cache_resource(show_spinner=False)
def lpips_module():
    """LPIPS (AlexNet) when its weights are available offline, else None."""
    if weights_status().get("lpips") is not None:
        return None
    from vqexplore.metrics import LPIPS

    try:
        return LPIPS()
    except VQExploreError:
        return None


@st.cache_data(show_spinner=False, max_entries=64)
def reconstructions(path: str, stamp: tuple, images_key: str, _images: tuple, with_lpips: bool):
    """analysis-free: ``vqexplore.reconstruct.reconstruct`` of prepared uint8 images, cached by
    the checkpoint and a digest of the images (``images_key``)."""
    from vqexplore.reconstruct import reconstruct

    return reconstruct(load_model(path, stamp), list(_images), lpips=lpips_module() if with_lpips else None)


@st.cache_data(show_spinner=False, max_entries=32)
def alignment(path_a: str, stamp_a: tuple, path_b: str, stamp_b: tuple, n):
    """(CodeAlignment, info) of two checkpoints on the validation sample ``n`` (see
    ``vqexplore.alignment.align_models``)."""
    from vqexplore.alignment import align_models

    return align_models(load_model(path_a, stamp_a), load_model(path_b, stamp_b), validation_images(n))


@st.cache_data(show_spinner=False, max_entries=8)
def aligned_run_usage(run_dir: str, checkpoints: tuple, n, max_checkpoints: int):
    """``vqexplore.alignment.aligned_usage_over_steps`` of a run (``checkpoints`` keys the cache)."""
    from vqexplore.alignment import aligned_usage_over_steps

    def loader(path):
        return load_model(str(path), weights_stamp(str(path)))

    return aligned_usage_over_steps(run_dir, validation_images(n), max_checkpoints=max_checkpoints, loader=loader)


@st.cache_data(show_spinner=False, max_entries=256)
def tile(path: str, stamp: tuple, code: int) -> np.ndarray:
    from vqexplore.analysis import decoded_tile

    return decoded_tile(load_model(path, stamp), int(code))


@st.cache_data(show_spinner=False, max_entries=128)
def surgery(path: str, stamp: tuple, indices: np.ndarray, cells: np.ndarray, code: int, original: np.ndarray):
    """``vqexplore.surgery.token_surgery`` of one image's grid."""
    from vqexplore.surgery import token_surgery

    return token_surgery(load_model(path, stamp), indices, cells, int(code), original=original)


@st.cache_data(show_spinner=False, max_entries=256)
def nearest(path: str, stamp: tuple, code: int, k: int, used: np.ndarray | None):
    """The ``k`` codes nearest to ``code`` (among ``used`` when given): (ids, distances)."""
    from vqexplore.surgery import nearest_codes

    return nearest_codes(load_model(path, stamp), int(code), k, among=used)


@st.cache_data(show_spinner=False, ttl=30)
def sweep_rows(path: str) -> list[dict]:
    """The CPU sweep's rows (``docs/cpu_sweep.json``, written by ``python -m trainer sweep``); [] if unreadable."""
    from trainer.sweep import read_rows

    try:
        return read_rows(path)
    except ValueError:
        return []


def sweep_points(path: str):
    """Rate points of the CPU sweep's rows; [] if unreadable."""
    from vqexplore.ratedistortion import points_from_sweep_rows

    return points_from_sweep_rows(sweep_rows(path), source=Path(path).name)


def remedy_rows() -> dict[str, tuple[str, ...]]:
    """Remedy -> the CPU sweep's rows that tried it (named in the health diagnosis)."""
    from trainer.sweep import remedy_rows as rows_of

    return rows_of(sweep_rows(str(SWEEP_TABLE)))


@st.cache_data(show_spinner=False, ttl=10)
def run_points(runs_root: str):
    from vqexplore.ratedistortion import points_from_runs

    return points_from_runs(runs_root)


SWEEP_TABLE = REPO / "docs" / "cpu_sweep.json"  # the sweep's rows, beside its markdown tables
