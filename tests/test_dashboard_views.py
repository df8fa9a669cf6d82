"""Dashboard views added for issue 12 through AppTest: aligned codes, view state in the URL query,
token surgery on the Reconstructions page, rate-distortion on Compare; one navigation."""
from pathlib import Path

import numpy as np
import pytest

from test_dashboard import APP, REPO, TINY, _count, _charts, _ok, build_fixture_tree, tree  # noqa: F401


def _app(query: dict | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=180)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    return at


def _q(at, key: str) -> list[str]:
    """The URL query's values of ``key`` after the last run (AppTest keeps one value bare)."""
    value = at.query_params.get(key, [])
    return [value] if isinstance(value, str) else list(value)


def _open(at, page: str):
    at.switch_page(f"views/{page}.py").run()
    return at


def test_one_navigation_no_pages_folder():
    # Streamlit runs a `pages/` folder beside the main script as an old-style multipage app until
    # st.navigation first runs: a fresh server's first request to /compare would show another
    # sidebar. The views live in app/views/ and the dashboard's st.navigation lists every one.
    assert not (REPO / "app" / "pages").exists()
    listed = (REPO / "app" / "dashboard.py").read_text()
    for view in sorted((REPO / "app" / "views").glob("*.py")):
        assert f'"views/{view.name}"' in listed, view.name


def test_aligned_codes_two_steps_of_a_run(tree):
    at = _app()
    at.sidebar.multiselect(key="w_selected_sources").set_value(["vq-64", "run: tiny-run"]).run()
    _open(at, "aligned_codes")
    _ok(at, "Aligned codes")
    assert at.selectbox(key="align_a").value == "tiny-run @ step 10"
    assert at.selectbox(key="align_b").value == "tiny-run @ step 30"
    labels = [m.label for m in at.metric]
    assert labels == ["Live codes A", "Live codes B", "Persisting", "… with the same id", "Token agreement"]
    assert any("Hungarian assignment" in c.value for c in at.caption)
    assert _charts(at.main) == 2  # distance vs usage, codes x steps
    assert len(at.dataframe) == 2  # matched pairs, per-transition table
    # The same checkpoint on both sides: every live code persists with its own id, all tokens agree.
    at.selectbox(key="align_b").select("tiny-run @ step 10").run()
    _ok(at, "Aligned codes")
    live, persisting, same = (int(at.metric[i].value) for i in (0, 2, 3))
    assert live > 0 and persisting == live == same
    assert at.metric[4].value == "100.0%"
    assert _q(at, "a") == ["tiny-run @ step 10"] and _q(at, "b") == ["tiny-run @ step 10"]
    # Rows that follow fixed ids instead of aligned codes.
    at.radio(key="align_rows").set_value("id").run()
    _ok(at, "Aligned codes")
    assert any("fixed code ids" in c.value for c in at.caption)


def test_aligned_codes_refuses_different_spaces(tree):
    at = _app()
    at.sidebar.multiselect(key="w_selected_sources").set_value(["vq-64", "fsq-5-4-3"]).run()
    _open(at, "aligned_codes")
    assert not at.exception
    assert len(at.error) == 1 and "code dimensions" in at.error[0].value
    at.sidebar.multiselect(key="w_selected_sources").set_value(["vq-64"]).run()
    assert not at.exception and any("Select two checkpoints" in i.value for i in at.info)


def test_view_state_in_the_url(tree):
    at = _app({"ckpt": ["vq-64", "vq-l2-128"], "focus": "vq-l2-128", "code": "5", "n": "16"})
    _ok(at, "Compare checkpoints")
    assert at.session_state["selected_sources"] == ["vq-64", "vq-l2-128"]
    assert len(at.dataframe[0].value) == 2
    assert _q(at, "ckpt") == ["vq-64", "vq-l2-128"] and _q(at, "n") == ["16"]
    _open(at, "code_inspector")
    _ok(at, "Code inspector")
    assert at.selectbox(key="focus_select").value == "vq-l2-128"
    assert at.number_input(key="inspector_code").value == 5
    # Changing the view changes the link.
    at.number_input(key="inspector_code").set_value(9).run()
    assert _q(at, "code") == ["9"] and _q(at, "focus") == ["vq-l2-128"]
    # Values the server does not offer are ignored, and said once.
    bad = _app({"ckpt": ["nope", "vq-64"], "n": "13", "code": "x"})
    _ok(bad, "Compare checkpoints")
    assert bad.session_state["selected_sources"] == ["vq-64"] and bad.session_state["sample_size"] == 64
    assert any("nope" in w.value for w in bad.warning)
