"""Dashboard views added for issue 12 through AppTest: aligned codes, view state in the URL query,
token surgery on the Reconstructions page, rate-distortion on Compare; one navigation."""

import pytest

from helpers.dashboard import PAGES, open_page
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
    return open_page(at, page)


def test_one_navigation_no_pages_folder():
    # Streamlit runs a `pages/` folder beside the main script as an old-style multipage app until
    # st.navigation first runs: a fresh server's first request to /compare would show another
    # sidebar. The views live in app/views/, one render() each, and app.pages lists every one.
    assert not (REPO / "app" / "pages").is_dir()
    views = {v.stem for v in (REPO / "app" / "views").glob("*.py") if v.stem != "__init__"}
    assert views == set(PAGES)


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


def _expected_surgery(tree, name, cells_text, code=None, used_only=True):
    """The surgery computed directly with the library on validation image 0 (64 x 64)."""
    from vqexplore import analysis, load
    from vqexplore.data import tensor_to_image, validation_batch
    from vqexplore.reconstruct import reconstruct
    from vqexplore.surgery import majority_code, nearest_codes, parse_cells, token_surgery

    model = load(tree["checkpoints"] / name)
    image = tensor_to_image(validation_batch(n=64, size=64)[0])
    [r] = reconstruct(model, [image])
    cells = parse_cells(cells_text, r.indices.shape)
    if code is None:
        used = analysis.usage_counts(model, validation_batch(n=64, size=64)) > 0 if used_only else None
        code = int(nearest_codes(model, majority_code(r.indices, cells), 1, among=used)[0][0])
    return token_surgery(model, r.indices, cells, code, original=image), code


def test_reconstructions_swipe_and_token_surgery(tree):
    at = _app()
    at.sidebar.multiselect(key="w_selected_sources").set_value(["vq-64", "vq-l2-128"]).run()
    _open(at, "reconstructions")
    _ok(at, "Reconstructions")
    assert _count(at.main, "iframe") == 4 * 2  # one swipe (with its error map and token map) per image and checkpoint
    assert _count(at.main, "image") == 0
    assert any("drawn up to 4x (nearest-neighbour, at most 256 px wide" in c.value for c in at.caption)
    assert at.select_slider(key="recon_per_row").value == 2  # both checkpoints on one row
    at.radio(key="recon_layer").set_value("tokens").run()
    assert any("token map (right)" in c.value for c in at.caption)
    # Surgery: no cells yet -> a hint, no result.
    assert at.selectbox(key="surgery_ckpt").value == "vq-64"
    assert any("Pick one or more cells" in i.value for i in at.info)
    at.text_input(key="surgery_cells").input("2-3,4-5").run()
    _ok(at, "Reconstructions")
    expected, code = _expected_surgery(tree, "vq-64", "2-3,4-5")
    assert any(f"→ **code {code}**" in m.value for m in at.markdown)
    values = {m.label: m for m in at.metric}
    assert values["PSNR, original decode"].value == f"{expected.psnr_before:.2f} dB"
    assert values["PSNR, edited decode"].value == f"{expected.psnr_after:.2f} dB"
    assert values["PSNR, edited decode"].delta == f"{expected.psnr_delta:+.2f} dB"
    assert values["Pixels changed"].value == str(int(expected.changed.sum()))
    assert _count(at.main, "iframe") == 4 * 2 + 1  # + original vs edited decode
    # A code by id, on the other checkpoint.
    at.selectbox(key="surgery_ckpt").select("vq-l2-128").run()
    at.radio(key="surgery_pick").set_value("id").run()
    at.number_input(key="surgery_code").set_value(5).run()
    _ok(at, "Reconstructions")
    expected, _ = _expected_surgery(tree, "vq-l2-128", "2-3,4-5", code=5)
    assert {m.label: m.value for m in at.metric}["PSNR, edited decode"] == f"{expected.psnr_after:.2f} dB"
    assert _q(at, "edit") == ["vq-l2-128"] and _q(at, "cells") == ["2-3,4-5"] and _q(at, "to") == ["5"]
    # Cells outside the grid: one sentence, the rest of the page works.
    at.text_input(key="surgery_cells").input("2,99").run()
    assert not at.exception and len(at.error) == 1 and "outside the 16 x 16 token grid" in at.error[0].value
    # The link reopens the same edit.
    link = {k: _q(at, k) for k in ("ckpt", "edit", "img", "pick", "to", "layer")} | {"cells": ["2-3,4-5"]}
    again = _app(link)
    _open(again, "reconstructions")
    _ok(again, "Reconstructions")
    assert again.selectbox(key="surgery_ckpt").value == "vq-l2-128"
    assert again.radio(key="recon_layer").value == "tokens"
    assert {m.label: m.value for m in again.metric}["PSNR, edited decode"] == f"{expected.psnr_after:.2f} dB"


def test_compare_rate_distortion(tree):
    import math

    at = _app({"ckpt": ["vq-64", "fsq-5-4-3"]})
    _ok(at, "Compare checkpoints")
    assert _charts(at.main) == 2 and len(at.dataframe) == 1  # the table view by default (usage vs quality, curves)
    at.radio(key="compare_view").set_value("rd").run()
    _ok(at, "Compare checkpoints")
    assert _charts(at.main) == 1
    frame = at.dataframe[0].value
    assert list(frame["checkpoint"]) and set(frame["set"]) == {"selected"}
    vq = frame[frame["checkpoint"] == "vq-64"].iloc[0]
    # vq-64's metrics.json: perplexity 20 -> log2(20) bits per token; 16 x 16 tokens at 64 px.
    assert vq["tokens"] == 256 and vq["bits (fixed)"] == 256 * 6
    assert vq["bits (entropy)"] == pytest.approx(256 * math.log2(20.0)) and vq["PSNR"] == 20.5
    fsq = frame[frame["checkpoint"] == "fsq-5-4-3"].iloc[0]
    assert fsq["quantizer"] == "FSQ" and "live (64 val images)" in fsq["source"]
    assert fsq["bits (entropy)"] <= fsq["bits (fixed)"]
    # The CPU sweep's rows as a preset (the real docs/cpu_sweep.md).
    at.toggle(key="rd_sweep").set_value(True).run()
    _ok(at, "Compare checkpoints")
    frame = at.dataframe[0].value
    from trainer.sweep import read_rows
    from vqexplore.ratedistortion import points_from_sweep_rows

    n_rows = len(points_from_sweep_rows(read_rows(REPO / "docs" / "cpu_sweep.md")))
    assert n_rows >= 18 and (frame["set"] == "CPU sweep").sum() == n_rows and "vq-512" in set(frame["checkpoint"])
    assert _q(at, "view") == ["rd"] and _q(at, "sweep") == ["1"]
    again = _app({"ckpt": ["vq-64"], "view": "rd", "sweep": "1"})
    _ok(again, "Compare checkpoints")
    assert (again.dataframe[0].value["set"] == "CPU sweep").sum() == n_rows
