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

DEFAULT_SAMPLE = 64
DEFAULT_IMAGE_SIZE = 64  # the study's resolution


@st.cache_resource(show_spinner=False, max_entries=16)
def load_model(path: str, stamp: tuple):
    import torch

    import vqexplore

    torch.set_grad_enabled(False)
    return vqexplore.load(path)


def model_of(p: Source):
    return load_model(p.path, weights_stamp(p.path))


@st.cache_resource(show_spinner=False)
def validation_images(sample: tuple):
    """The fixed validation sample, ``sample`` = (n, size): (n, 3, size, size) in [-1, 1]."""
    from vqexplore.data import validation_batch

    n, size = sample
    return validation_batch("builtin", n=n, size=size)


def sample_size() -> int:
    return int(st.session_state.get(keys.SAMPLE_SIZE, DEFAULT_SAMPLE))


def sample() -> tuple:
    """(number of validation images, their side in pixels): part of every cache key."""
    return (sample_size(), int(st.session_state.get(keys.IMAGE_SIZE, DEFAULT_IMAGE_SIZE)))


@st.cache_data(show_spinner=False, max_entries=16)
def encoded(path: str, stamp: tuple, n: tuple):
    """The validation sample through encoder + quantizer (code ids and encoder outputs)."""
    from vqexplore import analysis

    return analysis.encode_sample(load_model(path, stamp), validation_images(n))


@st.cache_data(show_spinner=False, max_entries=64)
def usage_counts(path: str, stamp: tuple, n: tuple) -> np.ndarray:
    model = load_model(path, stamp)
    return encoded(path, stamp, n).counts(model.codebook_size)


@st.cache_data(show_spinner=False, max_entries=16)
def health(path: str, stamp: tuple, n: tuple, remedy_rows: dict | None = None):
    """Codebook health on the validation sample (``vqexplore.health``)."""
    from vqexplore.health import codebook_health
    from vqexplore.projection import encoder_outputs

    model, sample = load_model(path, stamp), encoded(path, stamp, n)
    return codebook_health(model, encoder_outputs(model, None, max_points=8192, encoded=sample),
                           sample.counts(model.codebook_size), remedy_rows)


def counts_of(p: Source) -> np.ndarray:
    return usage_counts(p.path, weights_stamp(p.path), sample())


@st.cache_data(show_spinner=False, max_entries=32)
def projection(path: str, stamp: tuple, method: str, with_latents: bool, n: tuple, dims: int = 2):
    from vqexplore import analysis

    model = load_model(path, stamp)
    return analysis.cached_projection(path, model, method, images=validation_images(n) if with_latents else None,
                                      encoded=encoded(path, stamp, n) if with_latents else None,
                                      seed=analysis.default_seed(model.codebook_size),
                                      n_epochs=analysis.default_epochs(model.codebook_size), dims=dims)


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


@st.cache_data(show_spinner=False, max_entries=64)
def comparison_row(path: str, stamp: tuple, label: str, n: tuple, with_lpips: bool) -> dict:
    from vqexplore import analysis

    model = load_model(path, stamp)
    return analysis.comparison_row(label, model, checkpoint_dir=path, images=validation_images(n),
                                   counts=usage_counts(path, stamp, n), lpips=lpips_module() if with_lpips else None)


@st.cache_data(show_spinner=False, max_entries=256)
def code_gallery(path: str, stamp: tuple, code: int, n: tuple, max_patches: int):
    from vqexplore import analysis

    return analysis.code_gallery(load_model(path, stamp), validation_images(n), code, max_patches=max_patches,
                                 encoded=encoded(path, stamp, n))


@st.cache_data(show_spinner=False, max_entries=16)
def run_usage(run_dir: str, checkpoints: tuple, n: tuple, max_checkpoints: int):
    from vqexplore import analysis

    def loader(path):
        return load_model(str(path), weights_stamp(str(path)))

    return analysis.usage_over_steps(run_dir, validation_images(n), max_checkpoints=max_checkpoints, loader=loader)


@st.cache_data(show_spinner=False, ttl=60)
def weights_status() -> dict:
    from vqexplore.metrics import weights_status as status

    return status()


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
def alignment(path_a: str, stamp_a: tuple, path_b: str, stamp_b: tuple, n: tuple):
    """(CodeAlignment, info) of two checkpoints on the validation sample ``n`` (see
    ``vqexplore.alignment.align_models``)."""
    from vqexplore.alignment import align_models

    return align_models(load_model(path_a, stamp_a), load_model(path_b, stamp_b), validation_images(n))


@st.cache_data(show_spinner=False, max_entries=8)
def aligned_run_usage(run_dir: str, checkpoints: tuple, n: tuple, max_checkpoints: int):
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
