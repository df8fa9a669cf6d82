"""The view's state in the URL query, so that a view can be shared as a link and reopens as it was.

The address holds the page (``/reconstructions``) and the query the rest::

    /code_inspector?ckpt=vq-512&ckpt=fsq-8555&focus=vq-512&code=17&n=64&size=32

Global keys (every page): ``ckpt`` (selected checkpoints, repeated), ``focus`` (the checkpoint of
the single-checkpoint pages), ``code`` (the code being inspected), ``n`` / ``size`` (validation
sample). A page adds its own with :func:`track` (e.g. the surgery's image and cells).

How: the query a session was opened with is read once, at its first run, into
``st.session_state`` (only values that are valid: a known checkpoint label, a size offered by
the sidebar); from then on the session state is the truth and every run writes it back to
``st.query_params`` once, at its end (``ui.footer`` / ``ui.stop``; the browser's address bar
follows without a reload).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from app import keys

_INITIAL = "_url_initial"          # the query the session was opened with: {key: [values]}
_TRACKED = "_url_tracked_now"      # page keys tracked during this run: {query key: session key}


def _initial() -> dict[str, list[str]]:
    if _INITIAL not in st.session_state:
        st.session_state[_INITIAL] = {k: st.query_params.get_all(k) for k in st.query_params}
        st.session_state["_url_fresh"] = True
    return st.session_state[_INITIAL]


def _as_int(values: list[str], allowed=None) -> int | None:
    try:
        v = int(values[-1])
    except (ValueError, IndexError):
        return None
    return v if allowed is None or v in allowed else None


def restore_global(options: list[str], sample_sizes, image_sizes) -> None:
    """At a session's first run: copy the global keys of the opening query into session state.
    ``options``: the checkpoint labels the sidebar offers (others in the link are ignored)."""
    query = _initial()
    if not st.session_state.pop("_url_fresh", False):
        return
    st.session_state["_url_applied"] = True
    picked = [c for c in query.get("ckpt", []) if c in options]
    if picked:
        st.session_state[keys.SELECTED_SOURCES] = list(dict.fromkeys(picked))
    unknown = [c for c in query.get("ckpt", []) if c not in options]
    if unknown:
        st.session_state["_url_unknown"] = unknown
    if query.get("focus") and query["focus"][-1] in options:
        st.session_state[keys.FOCUS] = query["focus"][-1]
    code = _as_int(query.get("code", []))
    if code is not None and code >= 0:
        st.session_state[keys.INSPECT_CODE] = code
    n = _as_int(query.get("n", []), sample_sizes)
    if n is not None:
        st.session_state[keys.SAMPLE_SIZE] = n
    size = _as_int(query.get("size", []), image_sizes)
    if size is not None:
        st.session_state[keys.IMAGE_SIZE] = size


def unknown_checkpoints() -> list[str]:
    """Checkpoint labels of the opening link that this server does not offer (to say so once)."""
    return st.session_state.pop("_url_unknown", [])


def track(query_key: str, session_key: str, parse: Callable[[str], Any] = str,
          valid: Callable[[Any], bool] | None = None) -> None:
    """Keep ``st.session_state[session_key]`` in the URL as ``query_key`` on this page. If the
    session was opened with that key (and it parses and is ``valid``), it is restored first,
    once. Call before the widget that uses ``session_key`` is drawn."""
    restored = st.session_state.setdefault("_url_restored", set())
    query = _initial()
    if query_key in query and query_key not in restored:
        restored.add(query_key)
        try:
            value = parse(query[query_key][-1])
        except (ValueError, TypeError, IndexError):
            value = None
        if value is not None and (valid is None or valid(value)):
            st.session_state[session_key] = value
    st.session_state.setdefault(_TRACKED, {})[query_key] = session_key


def publish() -> None:
    """Write the current view state into the URL query (global keys + this run's tracked keys)."""
    state = st.session_state
    pairs: list[tuple[str, str | list[str]]] = []
    if state.get(keys.SELECTED_SOURCES):
        pairs.append(("ckpt", list(state[keys.SELECTED_SOURCES])))
    if state.get(keys.FOCUS):
        pairs.append(("focus", str(state[keys.FOCUS])))
    if state.get(keys.INSPECT_CODE) is not None:
        pairs.append(("code", str(int(state[keys.INSPECT_CODE]))))
    for key, query_key in ((keys.SAMPLE_SIZE, "n"), (keys.IMAGE_SIZE, "size")):
        if state.get(key) is not None:
            pairs.append((query_key, str(state[key])))
    for query_key, session_key in state.get(_TRACKED, {}).items():
        value = state.get(session_key)
        if value is True:  # a toggle: on is "1", off is left out
            pairs.append((query_key, "1"))
        elif value is not None and value is not False and value != "":
            pairs.append((query_key, str(value)))
    # Always sent, even when the server's copy already matches: the browser drops what an
    # interrupted run sent (a rerun that superseded it), so the server's copy can be ahead of the
    # address bar; one small message per call keeps them equal.
    st.query_params.from_dict(pairs)


def start_run() -> None:
    """Forget the previous run's page keys (each page tracks its own)."""
    st.session_state[_TRACKED] = {}
