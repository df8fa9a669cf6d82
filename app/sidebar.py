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
from app.cached import DEFAULT_IMAGE_SIZE, DEFAULT_SAMPLE, default_protocol, protocol_images_count
from app.sources import checkpoint_root, confined, discover, local_roots, resolve, runs_root
from vqexplore.errors import VQExploreError
from vqexplore.runlayout import RunLayout

log = logging.getLogger("vqexplore.dashboard")
SAMPLE_SIZES = (16, 64, 256, 1024)
IMAGE_SIZES = (32, 64, 128, 256)
# The evaluation protocol's source in the sidebar -> (label, image counts offered, default count).
# "photos": the photo corpus's 8 held-out photos, the README's and the demo's protocol (the default).
PROTOCOL_SOURCES = {
    "photos": ("held-out photos (photo corpus, 8)", ("all",), "all"),
    "builtin": ("built-in photos, fixed crops", (16, 64, 256), DEFAULT_SAMPLE),
    "folder": ("an image folder", (16, 64, 256, 1024), 256),
    "hf": ("a Hugging Face dataset (hf:)", (16, 64, 256, 1024), 256),
    "imagenet64": ("Downsampled ImageNet val", (16, 64, 256, 1024), 1024),
}
DEFAULT_PROTOCOL_SOURCE = "photos"
# Shipped with the package, so never checked by counting their images (which imports torch and decodes
# them: seconds of a fresh server's first page that reads only stored results).
BUNDLED_SOURCES = ("photos", "builtin")
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

    sizes = []
    for path in paths:
        try:
            folder = Path(path)
            if not folder.is_dir():
                continue  # a Hub repo id: not fetched for the sidebar
            src = resolve(str(folder))
            # a checkpoint that does not record its resolution was trained at the study's 64 px
            sizes.append(int(read_config(src.path / CONFIG_NAME).get("resolution") or DEFAULT_IMAGE_SIZE))
        except Exception:  # an unreadable checkpoint says so on the pages that open it
            continue
    if not sizes:
        return None
    return min(IMAGE_SIZES, key=lambda s: (abs(s - max(sizes)), -s))


def _seed(key: str, default) -> None:
    if key not in st.session_state:
        st.session_state[key] = default
    st.session_state[keys.widget(key)] = st.session_state[key]


def default_selection(opts: dict[str, str]) -> list[str]:
    """What a fresh session shows: the newest training run first (the README's first run, once it
    has trained), then the demo checkpoints."""
    runs = [k for k in opts if k.startswith("run: ")]
    demos = [k for k in opts if not k.startswith("run: ")]

    def written(label: str) -> float:
        try:
            return RunLayout(opts[label]).checkpoints.stat().st_mtime
        except OSError:
            return 0.0

    newest = max(runs, key=written, default=None)
    return ([newest] if newest else []) + demos or list(opts)[:1]


def _source_changed() -> None:
    _keep(keys.PROTOCOL_SOURCE)
    for key in (keys.SAMPLE_SIZE, keys.USAGE_WHOLE, keys.PROTOCOL_PATH):
        st.session_state.pop(key, None)


def protocol_path_refusal(text: str) -> str | None:
    """On a confined server, a typed data folder must lie inside the checkpoint or run roots (the same
    rule as a typed checkpoint folder, one answer whatever exists); None when ``text`` may be used."""
    from vqexplore.hub import inside

    roots = local_roots()
    if roots is None:
        return None
    local = text[3:].split(":")[0] if text.startswith("hf:") else text
    hub_id = (text.startswith("hf:") and "/" in local and not local.startswith((".", "/", "~"))
              and not Path(local).expanduser().exists())
    if hub_id or inside(local, roots):
        return None
    where = " or ".join(str(r) for r in roots)
    return f"{text} is not a folder inside {where}; pick the held-out or built-in photos, or a folder there"


def protocol_sidebar() -> None:
    """The evaluation protocol's widgets; the chosen ``Protocol`` goes to ``st.session_state[keys.PROTOCOL]``
    (an unusable choice shows one error and the default protocol is used)."""
    from vqexplore.protocol import HELDOUT_USAGE_SCALES, Protocol

    _seed(keys.PROTOCOL_SOURCE, DEFAULT_PROTOCOL_SOURCE)
    src = st.session_state[keys.PROTOCOL_SOURCE]
    if src not in PROTOCOL_SOURCES:
        src = DEFAULT_PROTOCOL_SOURCE
        st.session_state[keys.PROTOCOL_SOURCE] = st.session_state[keys.widget(keys.PROTOCOL_SOURCE)] = src
    _, counts, default_count = PROTOCOL_SOURCES[src]
    if st.session_state.get(keys.SAMPLE_SIZE) not in counts:
        st.session_state[keys.SAMPLE_SIZE] = default_count
    _seed(keys.SAMPLE_SIZE, default_count)
    _seed(keys.IMAGE_SIZE, DEFAULT_IMAGE_SIZE)
    _seed(keys.USAGE_WHOLE, src == "photos")
    _seed(keys.PROTOCOL_PATH, "")
    st.markdown("**Evaluation protocol** (every number on every page)")
    st.selectbox("Images", list(PROTOCOL_SOURCES), key=keys.widget(keys.PROTOCOL_SOURCE), on_change=_source_changed,
                 format_func=lambda k: PROTOCOL_SOURCES[k][0],
                 help="Which images every page measures on: the photo corpus's held-out photos (never trained on; "
                      "the README's tables and the demo use them), the built-in photos' fixed crops, a folder of "
                      "images, a Hugging Face dataset or the Downsampled ImageNet val file.")
    if src in ("folder", "hf", "imagenet64"):
        st.text_input({"folder": "Image folder (ImageNet layout: its val/; else images held out by path hash)",
                       "hf": "Dataset: hf:<id or saved folder>[:<split>]",
                       "imagenet64": "Folder of the Downsampled ImageNet files (val_data), or the file"}[src],
                      key=keys.widget(keys.PROTOCOL_PATH), on_change=_keep, args=(keys.PROTOCOL_PATH,),
                      placeholder={"folder": "/data/my-images", "hf": "hf:/data/my-dataset",
                                   "imagenet64": "/data/imagenet64"}[src])
    st.selectbox("Number of images", counts, key=keys.widget(keys.SAMPLE_SIZE), on_change=_keep,
                 args=(keys.SAMPLE_SIZE,), format_func=lambda c: "all" if c == "all" else f"{c:,}")
    st.selectbox("Image size (pixels)", IMAGE_SIZES, key=keys.widget(keys.IMAGE_SIZE), on_change=_keep,
                 args=(keys.IMAGE_SIZE,),
                 help="Side of the square images (resized, centre-cropped; the built-in photos: fixed crops). "
                      "The study and the demo checkpoints use 64.")
    whole_ok = src in ("photos", "builtin", "folder")
    if whole_ok:
        st.toggle(f"Usage over the images whole at {'/'.join(map(str, HELDOUT_USAGE_SCALES))} px",
                  key=keys.widget(keys.USAGE_WHOLE), on_change=_keep, args=(keys.USAGE_WHOLE,),
                  help="Count codebook usage over the same images encoded whole at four sizes (many more tokens "
                       "than the squares: 8 photos at 64 px are 2,048 tokens, fewer than 4,096 codes). PSNR and "
                       "SSIM stay on the square images.")
    count = st.session_state[keys.SAMPLE_SIZE]
    count = None if count == "all" else int(count)
    scales = HELDOUT_USAGE_SCALES if whole_ok and st.session_state.get(keys.USAGE_WHOLE) else ()
    size = int(st.session_state[keys.IMAGE_SIZE])
    chosen, problem = None, None
    try:
        if src == "photos":
            chosen = Protocol.heldout_photos(size, count, usage_scales=scales)
        elif src == "builtin":
            chosen = Protocol.builtin(size, count, usage_scales=scales)
        else:
            text = (st.session_state.get(keys.PROTOCOL_PATH) or "").strip()
            if src == "hf" and text and not text.startswith("hf:"):
                text = "hf:" + text
            if not text:
                problem = "Type the folder or dataset above; until then the held-out photos are used."
            else:
                problem = protocol_path_refusal(text)
                if problem is None:
                    chosen = Protocol(text, "val", size, "center", count, usage_scales=scales)
        if chosen is not None and src not in BUNDLED_SOURCES:
            protocol_images_count(chosen)  # a typed folder or dataset: usable? (one error here if not)
    except VQExploreError as e:
        chosen, problem = None, str(e)
    except Exception as e:  # never let a data source take the app down
        log.exception("protocol %r failed", chosen)
        chosen, problem = None, f"unexpected {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if problem:
        st.error(problem + ("" if problem.endswith("used.") else " (the held-out photos are used meanwhile)"))
    st.session_state[keys.PROTOCOL] = chosen or default_protocol()


def sidebar() -> None:
    """The source picker. Every page draws it first (``page()``), so it exists on all pages and
    in ``AppTest`` page switches alike; its values are kept across pages."""
    opts = _options()
    # a shared link's view, once
    viewstate.restore_global(list(opts), SAMPLE_SIZES, IMAGE_SIZES, tuple(PROTOCOL_SOURCES))
    _seed(keys.SELECTED_SOURCES, default_selection(opts))
    # Options can vanish (a folder deleted): keep only what still exists.
    st.session_state[keys.SELECTED_SOURCES] = [k for k in st.session_state[keys.SELECTED_SOURCES] if k in opts]
    _seed(keys.SELECTED_SOURCES, None)
    if IMAGE_SIZE_CHOSEN not in st.session_state:  # first run: an opening link's size is a choice
        st.session_state[IMAGE_SIZE_CHOSEN] = "size" in st.query_params
    if not st.session_state[IMAGE_SIZE_CHOSEN]:
        # the image size follows the selected checkpoints' training resolution (256 for a published VQGAN)
        trained = training_size(opts[k] for k in st.session_state[keys.SELECTED_SOURCES] if k in opts)
        st.session_state[keys.IMAGE_SIZE] = trained or st.session_state.get(keys.IMAGE_SIZE, DEFAULT_IMAGE_SIZE)
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
        protocol_sidebar()
        if not opts:
            st.info(f"No checkpoints found in {checkpoint_root()}: add a folder above, or train one with "
                    f"`python -m trainer --cfg configs/cpu/<name>.yaml`.")
