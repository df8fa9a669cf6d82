"""What every dashboard page starts and ends with: the page frame (title, sidebar, view state in the
link, timing), the selected checkpoints, and one way to show errors. Where checkpoints are:
``app.sources``; cached computations: ``app.cached``; the sidebar: ``app.sidebar``; the pages:
``app.pages``."""
from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from contextlib import contextmanager

import numpy as np
import streamlit as st

from app import keys, viewstate
from app.cached import model_of, prewarm, protocol, sample
from app.sidebar import _options, sidebar
from app.sources import resolve
from vqexplore.errors import VQExploreError
from vqexplore.hub import Source

log = logging.getLogger("vqexplore.dashboard")
# pages whose first render may need umap-learn (Code embeddings starts the warm-up itself, only when
# the projection is not stored beside the checkpoint)
PROJECTING_PAGES = ("code_inspector",)


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


def enlarge(img: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscale of a uint8 (H, W, 3) image, so small tiles stay crisp."""
    return img.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else img


def page(key: str) -> None:
    """Start the page ``key`` (``app.pages``): page config, warm-up, its heading and the sidebar."""
    from app.pages import BY_KEY

    title = BY_KEY[key].heading
    st.session_state[keys.PAGE_STARTED] = time.perf_counter()
    st.set_page_config(page_title=f"{title} · vqexplore", page_icon=":material/grid_on:", layout="wide")
    if key in PROJECTING_PAGES:
        prewarm()  # their projection waits for these imports: start them now; other pages start them at the end
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
    for label in st.session_state.get(keys.SELECTED_SOURCES, []):
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


def footer(warm_up: bool = True) -> None:
    """How long this page's script took on the server (from ``page()`` to here). ``warm_up``: start
    the background import of umap-learn now (a page that showed only stored results passes False: the
    warm-up would compete with the browser drawing it, for a projection nobody asked for yet)."""
    # The view state goes into the link once per run, here (or in stop()): two query updates in
    # one run sometimes left the browser's address at the first.
    viewstate.publish()
    if warm_up:
        prewarm()  # after the page: the warm-up thread would otherwise compete with a fresh server's first page
    started = st.session_state.get(keys.PAGE_STARTED)
    if started is not None:
        st.caption(f"Page computed in {time.perf_counter() - started:.2f} s on the server.")


def pick_one(picked: list[Source], key: str = keys.FOCUS) -> Source:
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


def single_checkpoint_page(key: str) -> tuple[Source, object, tuple]:
    """Start a page about one checkpoint: title and sidebar, the focused checkpoint (shared across
    pages), its model (or one error and a stop), a caption describing it, and the sample."""
    page(key)
    p = pick_one(require_selection())
    model = model_or_stop(p)
    st.caption(describe(model, p))
    return p, model, sample()


def single_checkpoint_config_page(key: str) -> tuple[Source, dict]:
    """:func:`single_checkpoint_page` without loading the model: (the focused source, its config.json),
    for a page that can often show stored results only (the model is loaded where it is needed)."""
    from app.cached import config_of
    from app.sources import weights_stamp

    page(key)
    p = pick_one(require_selection())
    try:
        config = config_of(p.path, weights_stamp(p.path))
    except VQExploreError as e:
        st.error(f"{p.name}: {e}")
        stop()
    st.caption(describe(config, p))
    return p, config


def describe(model_or_config, p: Source) -> str:
    """The caption of a single-checkpoint page: the config (``vqexplore.describe``; of a model or a
    config.json dict) and where it is."""
    from vqexplore.describe import config_summary

    config = model_or_config if isinstance(model_or_config, dict) else model_or_config.config
    where = f"{p.kind} {p.path}" + (f" (step {p.step})" if p.step is not None else "")
    return f"{config_summary(config)} — {where}"


def follow_clicked_code(clicked: int | None, shown: int | None, memo: str) -> None:
    """A chart click picks the code every page inspects (``keys.INSPECT_CODE``). A selection stays
    in the chart's state across reruns, so only a new click counts, once (``memo``: this chart's
    session key for the last click); a click on another code than ``shown`` reruns the page."""
    if clicked is None or clicked == st.session_state.get(memo):
        return
    st.session_state[memo] = clicked
    if clicked != shown:
        st.session_state[keys.INSPECT_CODE] = clicked
        st.rerun()
