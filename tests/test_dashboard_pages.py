"""Dashboard pages' presentation, through Streamlit's AppTest on real tiny
checkpoints and a real run folder: the Code inspector says what it does for K > 4,096 instead of
showing nothing, the Training page overlays runs with a smoothing control and shows the sample
grids, Code embeddings offers 3-D and the nearest codes of a chosen code, Codebook usage never
lists a dead code among the most used and offers the live-codes view."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image

from helpers.dashboard import dashboard_env
from test_dashboard import _app, _charts, _count, _ok, _open, build_fixture_tree, write_metrics
from vqexplore import VQModel


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    paths = build_fixture_tree(tmp_path_factory.mktemp("pages"))
    torch.manual_seed(0)
    big = VQModel(quantizer="vq", codebook_size=8192, code_dim=4, hidden_dim=8, n_resblocks=1)
    big.save_pretrained(paths["checkpoints"] / "vq-8192")
    samples = paths["run"] / "samples"
    samples.mkdir()
    for step in (10, 30):
        Image.fromarray(np.full((34, 130, 3), step, np.uint8)).save(samples / f"step-{step:08d}.png")
    other = paths["runs"] / "other-run"
    VQModel(quantizer="vq", codebook_size=64, code_dim=4, hidden_dim=8, n_resblocks=1).save_pretrained(
        other / "checkpoints" / "step-00000020")
    write_metrics(other, range(1, 21))
    with dashboard_env(paths):
        yield paths


def _select(at, labels):
    at.sidebar.multiselect(key="w_selected_sources").set_value(labels).run()


def test_code_inspector_draws_a_chart_for_large_codebooks_and_says_why_it_is_not_clickable(tree):
    at = _app()
    _select(at, ["vq-8192"])
    _open(at, "code_inspector")
    _ok(at, "Code inspector")
    assert at.radio(key="inspector_pick").value == "usage grid"
    assert _charts(at.main) == 1  # never a silent empty space
    assert any("not clickable" in c.value and "8,192 codes" in c.value for c in at.caption)
    at.radio(key="inspector_pick").set_value("usage grid (clickable)").run()
    assert _charts(at.main) == 1
    at.radio(key="inspector_pick").set_value("no chart").run()
    assert _charts(at.main) == 0 and any("type a code id" in c.value for c in at.caption)


def test_training_page_overlays_runs_smooths_and_shows_sample_grids(tree):
    at = _app()
    _select(at, ["run: tiny-run"])
    _open(at, "training")
    _ok(at, "Training")
    assert at.slider(key="training_smoothing").value == pytest.approx(0.6)
    assert at.multiselect(key="training_runs").value == ["tiny-run"]
    one = _charts(at.main)
    assert one >= 2  # one chart per metric group, each with its own legend
    assert _count(at.main, "image") == 1 and any("step 30" in c.value for c in at.caption)
    at.multiselect(key="training_runs").set_value(["tiny-run", "other-run"]).run()
    _ok(at, "Training")
    assert sum("last step" in c.value for c in at.caption) == 2
    assert any("no sample grids yet" in c.value for c in at.caption)  # other-run wrote none
    at.slider(key="training_smoothing").set_value(0.0).run()
    _ok(at, "Training")


def test_code_embeddings_in_3d_with_nearest_codes(tree):
    at = _app()
    _select(at, ["vq-64"])
    _open(at, "code_embeddings")
    _ok(at, "Code embeddings")
    at.radio(key="proj_method").set_value("pca").run()
    at.number_input(key="embedding_code").set_value(5).run()
    _ok(at, "Code embeddings")
    assert any("Nearest codes to code 5" in m.value for m in at.markdown)
    assert _count(at.main, "image") >= 2  # the code's tile and its neighbours' tiles
    at.radio(key="proj_dims").set_value(3).run()
    _ok(at, "Code embeddings")
    assert _charts(at.main) == 1


def test_codebook_usage_lists_only_used_codes_and_offers_live_codes(tree):
    at = _app()
    _select(at, ["vq-64"])
    _open(at, "codebook_usage")
    _ok(at, "Codebook usage")
    line = next(m.value for m in at.markdown if m.value.startswith("**Most used codes:**"))
    assert "(0)" not in line
