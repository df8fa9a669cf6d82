"""Shared pieces of the Streamlit dashboard: where checkpoints are, the source picker, cached
calls into ``vqexplore`` and one way to show errors.

Everything heavy goes through ``st.cache_resource`` (models, the image sample) or
``st.cache_data`` (counts, projections, galleries, tables), keyed by the checkpoint path and a
cheap stamp of its weights file (size, mtime) so that a rewritten checkpoint is reloaded.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent  # the checkout: its checkpoints/ and runs/ are the defaults

import numpy as np
import streamlit as st

from vqexplore.errors import VQExploreError
from vqexplore.hub import Source

import viewstate

log = logging.getLogger("vqexplore.dashboard")
PAGES_DIR = Path(__file__).resolve().parent / "views"
SAMPLE_SIZES = (16, 64, 256)
DEFAULT_SAMPLE = 64
IMAGE_SIZES = (32, 64, 128, 256)  # all multiples of 16: every SimpleCNN and f16 VQGAN tokenizes them
DEFAULT_IMAGE_SIZE = 64  # the study's resolution


# ---------------------------------------------------------------------------------------------
# Where things are
# ---------------------------------------------------------------------------------------------

def _cli_args() -> argparse.Namespace:
    """``streamlit run app/dashboard.py -- --checkpoints DIR --runs DIR [--confine]``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--checkpoints", default=None)
    parser.add_argument("--runs", default=None)
    parser.add_argument("--confine", action="store_true")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args


def confined() -> bool:
    """Hosted mode (``--confine`` or ``VQEXPLORE_CONFINE=1``; the Docker image's default): typed
    sources are folders inside the checkpoint and run roots, or Hub repo ids; any other server
    path is refused with one message that does not say whether it exists."""
    env = os.environ.get("VQEXPLORE_CONFINE", "").strip().lower()
    return _cli_args().confine or env in ("1", "true", "yes", "on")


def local_roots() -> tuple[Path, ...] | None:
    """The folders a typed path may point into, or None (any path: a laptop)."""
    return (checkpoint_root(), runs_root()) if confined() else None


def checkpoint_root() -> Path:
    """Folder of demo checkpoints: ``--checkpoints``, ``$VQEXPLORE_CHECKPOINTS``, or ``checkpoints/``."""
    return Path(_cli_args().checkpoints or os.environ.get("VQEXPLORE_CHECKPOINTS") or REPO / "checkpoints")


def runs_root() -> Path:
    """Folder of training runs: ``--runs``, ``$VQEXPLORE_RUNS``, or ``runs/``."""
    return Path(_cli_args().runs or os.environ.get("VQEXPLORE_RUNS") or REPO / "runs")


def discover(ckpt_root: Path, run_root: Path) -> dict[str, str]:
    """label -> path of every checkpoint (or run) folder in ``ckpt_root`` and run folder in
    ``run_root``; runs are labelled ``run: <name>``."""
    from vqexplore.hub import checkpoints_in

    found = {name if kind == "checkpoint" else f"run: {name}": str(path)
             for name, path, kind in checkpoints_in(ckpt_root)}
    found.update({f"run: {name}": str(path) for name, path, kind in checkpoints_in(run_root) if kind == "run"})
    return found


def weights_stamp(path: str) -> tuple:
    """(size, mtime_ns) of the checkpoint's weights: part of every cache key."""
    try:
        s = (Path(path) / "model.safetensors").stat()
        return (s.st_size, s.st_mtime_ns)
    except OSError:
        return (0, 0)


@st.cache_data(show_spinner=False, max_entries=256)
def _resolve(text: str, stamp: float, roots: tuple[str, ...] | None) -> Source:
    """``stamp`` only keys the cache (a time bucket for local paths, 0 for Hub ids); ``roots``:
    see ``local_roots()``."""
    import vqexplore

    from vqexplore.hub import list_checkpoints

    src = vqexplore.resolve(text, local_roots=roots)
    # resolve() guesses a run for any checkpoint inside a folder named "checkpoints" (the demo
    # folders too): only keep it when that run really has step-N checkpoints.
    if src.run_dir and not list_checkpoints(src.run_dir):
        src = dataclasses.replace(src, run_dir=None)
    return src


def resolve(text: str) -> Source:
    """Resolve a path or Hub repo id (raises VQExploreError). Local runs are re-resolved every
    few seconds so a run that writes a new checkpoint moves on to it."""
    from vqexplore.hub import inside

    roots = local_roots()
    local = Path(text).expanduser().exists() and (roots is None or inside(text, roots))
    return _resolve(text, time.time() // 5 if local else 0.0,
                    None if roots is None else tuple(str(r) for r in roots))


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

@contextmanager
def shown_errors(what: str = ""):
    """Turn an exception into one message on the page (the rest of the page keeps running).

    ``what`` names the checkpoint or file concerned ("vq-512: "). An unexpected error (a bug)
    is one line too; its traceback goes to the server's log, not to the visitor's page."""
    try:
        yield
    except VQExploreError as e:
        st.error(f"{what}{e}")
    except Exception as e:
        log.error("unexpected error%s\n%s", f" ({what.rstrip(': ')})" if what else "",
                  "".join(traceback.format_exception(e)))
        st.error(f"{what}unexpected {type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no details'} "
                 f"(the traceback is in the server log)")


# ---------------------------------------------------------------------------------------------
# Cached computations
# ---------------------------------------------------------------------------------------------

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
    return int(st.session_state.get("sample_size", DEFAULT_SAMPLE))


def sample() -> tuple:
    """(number of validation images, their side in pixels): part of every cache key."""
    return (sample_size(), int(st.session_state.get("image_size", DEFAULT_IMAGE_SIZE)))


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
def health(path: str, stamp: tuple, n: tuple):
    """Codebook health on the validation sample (``vqexplore.health``)."""
    from vqexplore.health import codebook_health
    from vqexplore.projection import encoder_outputs

    model, sample = load_model(path, stamp), encoded(path, stamp, n)
    return codebook_health(model, encoder_outputs(model, None, max_points=8192, encoded=sample),
                           sample.counts(model.codebook_size))


def counts_of(p: Source) -> np.ndarray:
    return usage_counts(p.path, weights_stamp(p.path), sample())


@st.cache_data(show_spinner=False, max_entries=32)
def projection(path: str, stamp: tuple, method: str, with_latents: bool, n: tuple):
    from vqexplore import analysis

    model = load_model(path, stamp)
    return analysis.cached_projection(path, model, method, images=validation_images(n) if with_latents else None,
                                      encoded=encoded(path, stamp, n) if with_latents else None,
                                      seed=analysis.default_seed(model.codebook_size),
                                      n_epochs=analysis.default_epochs(model.codebook_size))


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


def enlarge(img: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscale of a uint8 (H, W, 3) image, so small tiles stay crisp."""
    return img.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else img


# ---------------------------------------------------------------------------------------------
# Source picking
# ---------------------------------------------------------------------------------------------

def _options() -> dict[str, str]:
    opts = discover(checkpoint_root(), runs_root())
    opts.update(st.session_state.get("extra_sources", {}))
    return opts


def _add_source() -> None:
    text = (st.session_state.get("new_source") or "").strip()
    if not text:
        return
    try:
        picked = resolve(text)
    except VQExploreError as e:
        st.session_state["add_error"] = str(e)
        return
    except Exception as e:  # never let a bad path take the app down
        log.exception("adding %r failed", text)
        st.session_state["add_error"] = f"{text}: unexpected {type(e).__name__}: {e}"
        return
    st.session_state.pop("add_error", None)
    label = text if picked.kind == "hub" else f"{picked.name} ({text})"
    st.session_state.setdefault("extra_sources", {})[label] = text
    selected = list(st.session_state.get("selected_sources", []))
    if label not in selected:
        st.session_state["selected_sources"] = selected + [label]
    st.session_state["new_source"] = ""


# Sidebar values live in plain session keys ("selected_sources", "sample_size"); the widgets
# ("w_" + key) are re-seeded from them on every run and copy changes back in on_change. Widget
# state alone does not survive a page switch; plain keys do.

def _keep(key: str) -> None:
    st.session_state[key] = st.session_state[f"w_{key}"]
    if key == "image_size":
        st.session_state["image_size_chosen"] = True


def training_size(paths) -> int | None:
    """The largest training resolution (config.json ``resolution``; 64 when not recorded) of the
    local checkpoint or run folders ``paths``, as the nearest offered image size; None if none."""
    from vqexplore.hub import CONFIG_NAME, read_config
    from vqexplore.reconstruct import DEFAULT_RESOLUTION

    sizes = []
    for path in paths:
        try:
            folder = Path(path)
            if not folder.is_dir():
                continue  # a Hub repo id: not fetched for the sidebar
            src = resolve(str(folder))
            sizes.append(int(read_config(src.path / CONFIG_NAME).get("resolution") or DEFAULT_RESOLUTION))
        except Exception:  # an unreadable checkpoint says so on the pages that open it
            continue
    if not sizes:
        return None
    return min(IMAGE_SIZES, key=lambda s: (abs(s - max(sizes)), -s))


def _seed(key: str, default) -> None:
    if key not in st.session_state:
        st.session_state[key] = default
    st.session_state[f"w_{key}"] = st.session_state[key]


def sidebar() -> None:
    """The source picker. Every page draws it first (``page()``), so it exists on all pages and
    in ``AppTest`` page switches alike; its values are kept across pages."""
    opts = _options()
    viewstate.restore_global(list(opts), SAMPLE_SIZES, IMAGE_SIZES)  # a shared link's view, once
    _seed("selected_sources", [k for k in opts if not k.startswith("run: ")] or list(opts)[:1])
    # Options can vanish (a folder deleted): keep only what still exists.
    st.session_state["selected_sources"] = [k for k in st.session_state["selected_sources"] if k in opts]
    _seed("selected_sources", None)
    _seed("sample_size", DEFAULT_SAMPLE)
    if "image_size_chosen" not in st.session_state:  # first run: an opening link's size is a choice
        st.session_state["image_size_chosen"] = "size" in st.query_params
    if not st.session_state["image_size_chosen"]:
        # the image size follows the selected checkpoints' training resolution (256 for a published VQGAN)
        trained = training_size(opts[k] for k in st.session_state["selected_sources"] if k in opts)
        st.session_state["image_size"] = trained or st.session_state.get("image_size", DEFAULT_IMAGE_SIZE)
    _seed("image_size", DEFAULT_IMAGE_SIZE)
    with st.sidebar:
        st.multiselect("Checkpoints", list(opts), key="w_selected_sources", on_change=_keep,
                       args=("selected_sources",),
                       help=f"Checkpoint folders in {checkpoint_root()}, runs in {runs_root()}, and any added below.")
        st.text_input("Add a checkpoint folder, run folder or Hub repo id", key="new_source",
                      on_change=_add_source, placeholder="runs/my-run  or  user/repo",
                      help=(f"Folders inside {checkpoint_root()} or {runs_root()} only (this server is "
                            f"confined), or a Hub repo id." if confined() else None))
        st.button("Add", on_click=_add_source, key="add_source_button")
        if st.session_state.get("add_error"):
            st.error(st.session_state["add_error"])
        st.selectbox("Validation images", SAMPLE_SIZES, key="w_sample_size", on_change=_keep, args=("sample_size",),
                     help="The fixed validation sample (built-in photos) every page measures on.")
        st.selectbox("Image size (pixels)", IMAGE_SIZES, key="w_image_size", on_change=_keep, args=("image_size",),
                     help="Side of the validation crops. Until you pick one it follows the selected checkpoints' "
                          "training resolution (config.json 'resolution'): 64 for the study and the demo checkpoints, "
                          "256 for the published VQGANs (a checkpoint's metrics.json says the size it was "
                          "evaluated at).")
        if not opts:
            st.info(f"No checkpoints found in {checkpoint_root()}: add a folder above, or train one with "
                    f"`python -m trainer --cfg configs/cpu/<name>.yaml`.")


def page(title: str) -> None:
    """Start a page: page config, warm-up, its title and the sidebar."""
    st.session_state["_page_started"] = time.perf_counter()
    st.set_page_config(page_title=f"{title} · vqexplore", page_icon=":material/grid_on:", layout="wide")
    prewarm()
    viewstate.start_run()
    st.title(title)
    sidebar()
    unknown = viewstate.unknown_checkpoints()
    if unknown:
        st.warning(f"The link names checkpoint(s) this dashboard does not have: {', '.join(unknown)}; "
                   f"add them in the sidebar.")


def selected() -> list[Source]:
    """The selected sources, resolved; the ones that fail show one error each and are skipped."""
    opts = _options()
    out = []
    for label in st.session_state.get("selected_sources", []):
        text = opts.get(label)
        if text is None:
            continue
        try:
            src = resolve(text)
        except VQExploreError as e:
            st.error(f"{label}: {e}")
            continue
        out.append(dataclasses.replace(src, name=label))  # named as the sidebar lists it
    return out


def require_selection() -> list[Source]:
    picked = selected()
    if not picked:
        st.info("Select one or more checkpoints in the sidebar (or add a folder / Hub repo id there).")
        stop()
    return picked


def stop() -> None:
    """End the page here (``st.stop``), its view state written into the link first."""
    viewstate.publish()
    st.stop()


def footer() -> None:
    """How long this page's script took on the server (from ``page()`` to here)."""
    # The view state goes into the link once per run, here (or in stop()): two query updates in
    # one run sometimes left the browser's address at the first.
    viewstate.publish()
    started = st.session_state.get("_page_started")
    if started is not None:
        st.caption(f"Page computed in {time.perf_counter() - started:.2f} s on the server.")


def pick_one(picked: list[Source], key: str = "focus") -> Source:
    """One of the selected sources; the choice ("focus") is shared by the single-checkpoint pages."""
    labels = [p.name for p in picked]
    if st.session_state.get(key) not in labels:
        st.session_state[key] = labels[0]
    st.session_state[f"{key}_select"] = st.session_state[key]
    label = st.selectbox("Checkpoint", labels, key=f"{key}_select",
                         on_change=lambda: st.session_state.update({key: st.session_state[f"{key}_select"]}))
    return picked[labels.index(label)]


def model_or_stop(p: Source):
    """The loaded model, or one error message and the page stops there."""
    try:
        return model_of(p)
    except VQExploreError as e:
        st.error(f"{p.name}: {e}")
    except Exception as e:
        st.error(f"{p.name}: cannot load ({type(e).__name__}: {e})")
    stop()


def single_checkpoint_page(title: str) -> tuple[Source, object, tuple]:
    """Start a page about one checkpoint: title and sidebar, the focused checkpoint (shared across
    pages), its model (or one error and a stop), a caption describing it, and the sample."""
    page(title)
    p = pick_one(require_selection())
    model = model_or_stop(p)
    st.caption(describe(model, p))
    return p, model, sample()


def describe(model, p: Source) -> str:
    """The caption of a single-checkpoint page: the config (``vqexplore.describe``) and where it is."""
    from vqexplore.describe import config_summary

    where = f"{p.kind} {p.path}" + (f" (step {p.step})" if p.step is not None else "")
    return f"{config_summary(model.config)} — {where}"
