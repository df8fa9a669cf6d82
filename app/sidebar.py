"""The dashboard's sidebar, drawn first by every page: the checkpoint picker (found checkpoints,
runs and added folders or Hub repo ids), the validation sample's size and image size.

Sidebar values live in plain session keys (``app.keys``); the widgets (``keys.widget(key)``) are
re-seeded from them on every run and copy changes back in on_change. Widget state alone does not
survive a page switch; plain keys do."""
from __future__ import annotations

import logging
from pathlib import Path

import streamlit as st

from app import keys, viewstate
from app.cached import DEFAULT_IMAGE_SIZE, DEFAULT_SAMPLE
from app.sources import checkpoint_root, confined, discover, resolve, runs_root
from vqexplore.errors import VQExploreError

log = logging.getLogger("vqexplore.dashboard")
SAMPLE_SIZES = (16, 64, 256)
IMAGE_SIZES = (32, 64, 128, 256)  # all multiples of 16: every SimpleCNN and f16 VQGAN tokenizes them
IMAGE_SIZE_CHOSEN = "image_size_chosen"  # set once a link or the user picked the image size


def _options() -> dict[str, str]:
    opts = discover(checkpoint_root(), runs_root())
    opts.update(st.session_state.get(keys.EXTRA_SOURCES, {}))
    return opts


def _add_source() -> None:
    text = (st.session_state.get(keys.NEW_SOURCE) or "").strip()
    if not text:
        return
    try:
        picked = resolve(text)
    except VQExploreError as e:
        st.session_state[keys.ADD_ERROR] = str(e)
        return
    except Exception as e:  # never let a bad path take the app down
        log.exception("adding %r failed", text)
        st.session_state[keys.ADD_ERROR] = f"{text}: unexpected {type(e).__name__}: {e}"
        return
    st.session_state.pop(keys.ADD_ERROR, None)
    label = text if picked.kind == "hub" else f"{picked.name} ({text})"
    st.session_state.setdefault(keys.EXTRA_SOURCES, {})[label] = text
    selected = list(st.session_state.get(keys.SELECTED_SOURCES, []))
    if label not in selected:
        st.session_state[keys.SELECTED_SOURCES] = selected + [label]
    st.session_state[keys.NEW_SOURCE] = ""


def _keep(key: str) -> None:
    st.session_state[key] = st.session_state[keys.widget(key)]
    if key == keys.IMAGE_SIZE:
        st.session_state[IMAGE_SIZE_CHOSEN] = True


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
    st.session_state[keys.widget(key)] = st.session_state[key]


def sidebar() -> None:
    """The source picker. Every page draws it first (``page()``), so it exists on all pages and
    in ``AppTest`` page switches alike; its values are kept across pages."""
    opts = _options()
    viewstate.restore_global(list(opts), SAMPLE_SIZES, IMAGE_SIZES)  # a shared link's view, once
    _seed(keys.SELECTED_SOURCES, [k for k in opts if not k.startswith("run: ")] or list(opts)[:1])
    # Options can vanish (a folder deleted): keep only what still exists.
    st.session_state[keys.SELECTED_SOURCES] = [k for k in st.session_state[keys.SELECTED_SOURCES] if k in opts]
    _seed(keys.SELECTED_SOURCES, None)
    _seed(keys.SAMPLE_SIZE, DEFAULT_SAMPLE)
    if IMAGE_SIZE_CHOSEN not in st.session_state:  # first run: an opening link's size is a choice
        st.session_state[IMAGE_SIZE_CHOSEN] = "size" in st.query_params
    if not st.session_state[IMAGE_SIZE_CHOSEN]:
        # the image size follows the selected checkpoints' training resolution (256 for a published VQGAN)
        trained = training_size(opts[k] for k in st.session_state[keys.SELECTED_SOURCES] if k in opts)
        st.session_state[keys.IMAGE_SIZE] = trained or st.session_state.get(keys.IMAGE_SIZE, DEFAULT_IMAGE_SIZE)
    _seed(keys.IMAGE_SIZE, DEFAULT_IMAGE_SIZE)
    with st.sidebar:
        st.multiselect("Checkpoints", list(opts), key=keys.widget(keys.SELECTED_SOURCES), on_change=_keep,
                       args=(keys.SELECTED_SOURCES,),
                       help=f"Checkpoint folders in {checkpoint_root()}, runs in {runs_root()}, and any added below.")
        st.text_input("Add a checkpoint folder, run folder or Hub repo id", key=keys.NEW_SOURCE,
                      on_change=_add_source, placeholder="runs/my-run  or  user/repo",
                      help=(f"Folders inside {checkpoint_root()} or {runs_root()} only (this server is "
                            f"confined), or a Hub repo id." if confined() else None))
        st.button("Add", on_click=_add_source, key="add_source_button")
        if st.session_state.get(keys.ADD_ERROR):
            st.error(st.session_state[keys.ADD_ERROR])
        st.selectbox("Validation images", SAMPLE_SIZES, key=keys.widget(keys.SAMPLE_SIZE), on_change=_keep,
                     args=(keys.SAMPLE_SIZE,),
                     help="The fixed validation sample (built-in photos) every page measures on.")
        st.selectbox("Image size (pixels)", IMAGE_SIZES, key=keys.widget(keys.IMAGE_SIZE), on_change=_keep,
                     args=(keys.IMAGE_SIZE,),
                     help="Side of the validation crops. Until you pick one it follows the selected checkpoints' "
                          "training resolution (config.json 'resolution'): 64 for the study and the demo checkpoints, "
                          "256 for the published VQGANs (a checkpoint's metrics.json says the size it was "
                          "evaluated at).")
        if not opts:
            st.info(f"No checkpoints found in {checkpoint_root()}: add a folder above, or train one with "
                    f"`python -m trainer --cfg configs/cpu/<name>.yaml`.")
