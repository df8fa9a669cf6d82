"""Cached calls of the surgery, rate-distortion and aligned-codes views (as ``ui`` does for the
other pages): heavy work keyed by checkpoint path + weights stamp + validation sample."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

import ui


@st.cache_data(show_spinner=False, max_entries=32)
def alignment(path_a: str, stamp_a: tuple, path_b: str, stamp_b: tuple, n: tuple):
    """(CodeAlignment, info) of two checkpoints on the validation sample ``n`` (see
    ``vqexplore.alignment.align_models``)."""
    from vqexplore.alignment import align_models

    return align_models(ui.load_model(path_a, stamp_a), ui.load_model(path_b, stamp_b), ui.validation_images(n))


@st.cache_data(show_spinner=False, max_entries=8)
def aligned_run_usage(run_dir: str, checkpoints: tuple, n: tuple, max_checkpoints: int):
    """``vqexplore.alignment.aligned_usage_over_steps`` of a run (``checkpoints`` keys the cache)."""
    from vqexplore.alignment import aligned_usage_over_steps

    def loader(path):
        return ui.load_model(str(path), ui.weights_stamp(str(path)))

    return aligned_usage_over_steps(run_dir, ui.validation_images(n), max_checkpoints=max_checkpoints, loader=loader)


@st.cache_data(show_spinner=False, max_entries=256)
def tile(path: str, stamp: tuple, code: int) -> np.ndarray:
    from vqexplore.analysis import decoded_tile

    return decoded_tile(ui.load_model(path, stamp), int(code))


@st.cache_data(show_spinner=False, max_entries=128)
def surgery(path: str, stamp: tuple, indices: np.ndarray, cells: np.ndarray, code: int, original: np.ndarray):
    """``vqexplore.surgery.token_surgery`` of one image's grid."""
    from vqexplore.surgery import token_surgery

    return token_surgery(ui.load_model(path, stamp), indices, cells, int(code), original=original)


@st.cache_data(show_spinner=False, max_entries=256)
def nearest(path: str, stamp: tuple, code: int, k: int, used: np.ndarray | None):
    """The ``k`` codes nearest to ``code`` (among ``used`` when given): (ids, distances)."""
    from vqexplore.surgery import nearest_codes

    return nearest_codes(ui.load_model(path, stamp), int(code), k, among=used)


@st.cache_data(show_spinner=False, ttl=30)
def sweep_points(path: str):
    """Rate points of the CPU sweep's markdown tables (``docs/cpu_sweep.md``); [] if unreadable."""
    from vqexplore.ratedistortion import points_from_sweep_table

    try:
        return points_from_sweep_table(path)
    except ValueError:
        return []


@st.cache_data(show_spinner=False, ttl=10)
def run_points(runs_root: str):
    from vqexplore.ratedistortion import points_from_runs

    return points_from_runs(runs_root)


SWEEP_TABLE = Path(ui.REPO) / "docs" / "cpu_sweep.md"
