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
SAMPLE_SIZES = (8, 16, 64, 256, 1024)
DEFAULT_SAMPLE = 64
IMAGE_SIZES = (32, 64, 128, 256)
DEFAULT_IMAGE_SIZE = 64  # the study's resolution
# The evaluation protocol's source in the sidebar -> (label, image counts offered, default count).
# "photos": the photo corpus's 8 held-out photos, the README's and the demo's protocol (the default).
PROTOCOL_SOURCES = {
    "photos": ("held-out photos (photo corpus, 8)", ("all",), "all"),
    "builtin": ("built-in photos, fixed crops", (16, 64, 256), 64),
    "folder": ("an image folder", (16, 64, 256, 1024), 256),
    "hf": ("a Hugging Face dataset (hf:)", (16, 64, 256, 1024), 256),
    "imagenet64": ("Downsampled ImageNet val", (16, 64, 256, 1024), 1024),
}
DEFAULT_PROTOCOL_SOURCE = "photos"


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


def newest_run(opts: dict[str, str]) -> str | None:
    """The label of the run whose newest checkpoint was written last (None when no run has one)."""
    from vqexplore.hub import list_checkpoints

    best, best_time = None, -1.0
    for label, path in opts.items():
        if not label.startswith("run: "):
            continue
        try:
            ckpts = list_checkpoints(path)
            written = (Path(ckpts[-1][1]) / "model.safetensors").stat().st_mtime if ckpts else -1.0
        except OSError:
            continue
        if written > best_time:
            best, best_time = label, written
    return best


def default_selection(opts: dict[str, str]) -> list[str]:
    """What the dashboard opens on: the newest run (the README's run after training), then the demo
    checkpoints; the single-checkpoint pages open on the first of them."""
    run = newest_run(opts)
    demos = [k for k in opts if not k.startswith("run: ")]
    return ([run] if run else []) + demos or list(opts)[:1]


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


@st.cache_resource(show_spinner=False, max_entries=8)
def validation_images(protocol):
    """The protocol's images (``vqexplore.protocol.Protocol.images``): (n, 3, size, size) in [-1, 1]."""
    return protocol.images()


def sample_size() -> int:
    return int(protocol().num_images())


def sample():
    """The evaluation protocol the sidebar chose (``vqexplore.protocol.Protocol``, frozen and hashable):
    part of every cache key, so every number on every page is measured under it."""
    return protocol()


def protocol():
    """The sidebar's evaluation protocol; the default one when the sidebar's choice is unusable."""
    from vqexplore.protocol import Protocol

    chosen = st.session_state.get("protocol_value")
    return chosen if isinstance(chosen, Protocol) else default_protocol()


def default_protocol():
    from vqexplore.protocol import Protocol

    return Protocol.heldout_photos(DEFAULT_IMAGE_SIZE)


@st.cache_data(show_spinner=False, max_entries=128)
def evaluation(path: str, stamp: tuple, protocol, with_lpips: bool = False):
    """The checkpoint measured under ``protocol`` (``vqexplore.protocol.cached_evaluation``: on disk per
    weights hash and protocol key, so a fresh server or a switch back reads it instead of measuring).
    Every number a page shows about a checkpoint comes from here."""
    from vqexplore.protocol import cached_evaluation

    return cached_evaluation(path, load_model(path, stamp), protocol, lpips=lpips_module() if with_lpips else None)


def evaluation_of(p: Source, with_lpips: bool | None = None):
    if with_lpips is None:
        with_lpips = lpips_module() is not None
    return evaluation(p.path, weights_stamp(p.path), protocol(), with_lpips)


@st.cache_data(show_spinner=False, max_entries=16)
def encoded(path: str, stamp: tuple, n: tuple):
    """The validation sample through encoder + quantizer (code ids and encoder outputs)."""
    from vqexplore import analysis

    return analysis.encode_sample(load_model(path, stamp), validation_images(n))


def usage_counts(path: str, stamp: tuple, n) -> np.ndarray:
    """(K,) code counts of the checkpoint under protocol ``n`` (its evaluation's counts)."""
    return evaluation(path, stamp, n, lpips_module() is not None).counts


@st.cache_data(show_spinner=False, max_entries=16)
def health(path: str, stamp: tuple, n: tuple):
    """Codebook health on the validation sample (``vqexplore.health``)."""
    from vqexplore.health import codebook_health
    from vqexplore.projection import encoder_outputs

    model, sample = load_model(path, stamp), encoded(path, stamp, n)
    return codebook_health(model, encoder_outputs(model, None, max_points=8192, encoded=sample),
                           usage_counts(path, stamp, n))


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


def comparison_row(path: str, stamp: tuple, label: str, n, with_lpips: bool) -> dict:
    """The Compare table's row: the checkpoint's evaluation under protocol ``n``."""
    from vqexplore import analysis

    result = evaluation(path, stamp, n, with_lpips)
    return analysis.protocol_row(label, load_model(path, stamp).config, result.metrics)


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

    def counter(path, model):
        return usage_counts(str(path), weights_stamp(str(path)), n)

    return analysis.usage_over_steps(run_dir, None, max_checkpoints=max_checkpoints, loader=loader, counter=counter)


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


def _seed(key: str, default) -> None:
    if key not in st.session_state:
        st.session_state[key] = default
    st.session_state[f"w_{key}"] = st.session_state[key]


def sidebar() -> None:
    """The source picker. Every page draws it first (``page()``), so it exists on all pages and
    in ``AppTest`` page switches alike; its values are kept across pages."""
    opts = _options()
    # a shared link's view, once
    viewstate.restore_global(list(opts), SAMPLE_SIZES, IMAGE_SIZES, tuple(PROTOCOL_SOURCES))
    _seed("selected_sources", default_selection(opts))
    # Options can vanish (a folder deleted): keep only what still exists.
    st.session_state["selected_sources"] = [k for k in st.session_state["selected_sources"] if k in opts]
    _seed("selected_sources", None)
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
        protocol_sidebar()
        if not opts:
            st.info(f"No checkpoints found in {checkpoint_root()}: add a folder above, or train one with "
                    f"`python -m trainer --cfg configs/cpu/<name>.yaml`.")


def _source_changed() -> None:
    _keep("protocol_source")
    for key in ("sample_size", "usage_whole", "protocol_path"):
        st.session_state.pop(key, None)


@st.cache_data(show_spinner=False, max_entries=64, ttl=30)
def _checked(protocol) -> int:
    """The protocol's number of images (raises VQExploreError when its source is unusable)."""
    return protocol.num_images()


def protocol_path_refusal(text: str) -> str | None:
    """On a confined server, a typed data folder must lie inside the checkpoint or run roots (the same
    rule and the same answer as a typed checkpoint folder); None when ``text`` may be used."""
    from vqexplore.hub import inside

    roots = local_roots()
    if roots is None:
        return None
    local = text[3:].split(":")[0] if text.startswith("hf:") else text
    if text.startswith("hf:") and not Path(local).expanduser().exists() and "/" in local and not local.startswith(
            (".", "/", "~")):
        return None  # a Hub dataset id
    if inside(local, roots):
        return None
    where = " or ".join(str(r) for r in roots)
    return f"{text} is not a folder inside {where}; pick the held-out or built-in photos or a folder there"


def protocol_sidebar() -> None:
    """The evaluation protocol's widgets; the chosen ``Protocol`` goes to ``st.session_state["protocol_value"]``
    (an unusable choice shows one error and the default protocol is used)."""
    from vqexplore.protocol import HELDOUT_USAGE_SCALES, Protocol

    _seed("protocol_source", DEFAULT_PROTOCOL_SOURCE)
    src = st.session_state["protocol_source"]
    if src not in PROTOCOL_SOURCES:
        src = st.session_state["protocol_source"] = st.session_state["w_protocol_source"] = DEFAULT_PROTOCOL_SOURCE
    _, counts, default_count = PROTOCOL_SOURCES[src]
    if st.session_state.get("sample_size") not in counts:
        st.session_state["sample_size"] = default_count
    _seed("sample_size", default_count)
    _seed("image_size", DEFAULT_IMAGE_SIZE)
    _seed("usage_whole", src == "photos")
    _seed("protocol_path", "")
    st.markdown("**Evaluation protocol** (every number on every page)")
    st.selectbox("Images", list(PROTOCOL_SOURCES), key="w_protocol_source", on_change=_source_changed,
                 format_func=lambda k: PROTOCOL_SOURCES[k][0],
                 help="Which images every page measures on: the photo corpus's held-out photos (never trained on; "
                      "the README's tables and the demo use them), the built-in photos' fixed crops, a folder of "
                      "images, a Hugging Face dataset or the Downsampled ImageNet val file.")
    if src in ("folder", "hf", "imagenet64"):
        st.text_input({"folder": "Image folder (ImageNet layout: its val/; else images held out by path hash)",
                       "hf": "Dataset: hf:<id or saved folder>[:<split>]",
                       "imagenet64": "Folder of the Downsampled ImageNet files (val_data), or the file"}[src],
                      key="w_protocol_path", on_change=_keep, args=("protocol_path",),
                      placeholder={"folder": "/data/my-images", "hf": "hf:/data/my-dataset",
                                   "imagenet64": "/data/imagenet64"}[src])
    st.selectbox("Number of images", counts, key="w_sample_size", on_change=_keep, args=("sample_size",),
                 format_func=lambda c: "all" if c == "all" else f"{c:,}")
    st.selectbox("Image size (pixels)", IMAGE_SIZES, key="w_image_size", on_change=_keep, args=("image_size",),
                 help="Side of the square images (resized, centre-cropped; the built-in photos: fixed crops). "
                      "The study and the demo checkpoints use 64.")
    if src in ("photos", "builtin", "folder"):
        st.toggle(f"Usage over the images whole at {'/'.join(map(str, HELDOUT_USAGE_SCALES))} px",
                  key="w_usage_whole", on_change=_keep, args=("usage_whole",),
                  help="Count codebook usage over the same images encoded whole at four sizes (many more tokens "
                       "than the crops: 8 photos at 64 px are 2,048 tokens, fewer than 4,096 codes). PSNR and SSIM "
                       "stay on the square images.")
    count = st.session_state["sample_size"]
    kw = {"count": None if count == "all" else int(count), "usage_scales":
          HELDOUT_USAGE_SCALES if st.session_state.get("usage_whole") and src in ("photos", "builtin", "folder")
          else ()}
    size = int(st.session_state["image_size"])
    chosen, problem = None, None
    try:
        if src == "photos":
            chosen = Protocol.heldout_photos(size, **kw)
        elif src == "builtin":
            chosen = Protocol.builtin(size, **kw)
        else:
            text = (st.session_state.get("protocol_path") or "").strip()
            if src == "hf" and text and not text.startswith("hf:"):
                text = "hf:" + text
            if not text:
                problem = "Type the folder or dataset above; until then the held-out photos are used."
            else:
                problem = protocol_path_refusal(text)
                if problem is None:
                    chosen = Protocol(text, "val", size, "center", kw["count"], usage_scales=kw["usage_scales"])
        if chosen is not None:
            _checked(chosen)
    except VQExploreError as e:
        chosen, problem = None, str(e)
    except Exception as e:  # never let a data source take the app down
        log.exception("protocol %r failed", chosen)
        chosen, problem = None, f"unexpected {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if problem:
        st.error(problem + ("" if problem.endswith("used.") else " (the held-out photos are used meanwhile)"))
    st.session_state["protocol_value"] = chosen or default_protocol()


def page(title: str) -> None:
    """Start a page: page config, warm-up, its title and the sidebar."""
    st.session_state["_page_started"] = time.perf_counter()
    st.set_page_config(page_title=f"{title} · vqexplore", page_icon=":material/grid_on:", layout="wide")
    prewarm()
    viewstate.start_run()
    st.title(title)
    sidebar()
    st.caption(f"Measured under: {protocol().describe()}")
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


def code_dim_of(path: str) -> int | None:
    """The code dimension of a checkpoint folder from its config.json (no weights loaded)."""
    import json

    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    from vqexplore.describe import describe_config

    try:
        return int(describe_config(cfg).get("code dim"))
    except (TypeError, ValueError):
        return None


def compatible_pair(labels: list[str], paths: dict[str, str]) -> tuple[str, str]:
    """The first two labels whose checkpoints have the same code dimension (so their codebooks can be
    aligned); the first two when none match."""
    dims = {label: code_dim_of(paths[label]) for label in labels}
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            if dims[a] is not None and dims[a] == dims[b]:
                return a, b
    return labels[0], labels[1]


def describe(model, p: Source) -> str:
    """The caption of a single-checkpoint page: the config (``vqexplore.describe``) and where it is."""
    from vqexplore.describe import config_summary

    where = f"{p.kind} {p.path}" + (f" (step {p.step})" if p.step is not None else "")
    return f"{config_summary(model.config)} — {where}"
