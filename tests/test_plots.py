"""vqexplore.plots: every figure both apps draw, checked on its data."""
import numpy as np
import pandas as pd
import pytest

from vqexplore import plots

COUNTS = np.array([0, 5, 0, 100, 1, 0, 7, 30, 0, 2], dtype=np.int64)  # K = 10, 4 dead


def _trace(fig, name_part):
    return next(t for t in fig.data if name_part in (t.name or ""))


def test_usage_curves():
    other = np.arange(100)
    fig = plots.usage_curves({"small": COUNTS, "big": other})
    assert len(fig.data) == 2
    small, big = fig.data
    assert small.name == "small (6/10 used)" and big.name == "big (99/100 used)"
    y = np.asarray(small.y)
    assert len(y) == 6 and (np.diff(y) <= 0).all() and y.sum() == pytest.approx(100.0)  # usage in %
    assert "%" in fig.layout.yaxis.title.text
    assert np.asarray(small.x).max() == pytest.approx(0.6) and np.asarray(big.x).max() == pytest.approx(0.99)
    assert fig.layout.yaxis.type == "log"
    rank = plots.usage_curves({"small": COUNTS}, x="rank", log_y=False)
    assert list(rank.data[0].x) == [1, 2, 3, 4, 5, 6] and rank.layout.yaxis.type != "log"
    with pytest.raises(ValueError):
        plots.usage_curves({"a": COUNTS}, x="codes")
    fig.to_json()


def test_usage_heatmap_grid_and_dead_codes():
    rows, cols = plots.grid_shape(10)
    assert (rows, cols) == (3, 4)
    fig = plots.usage_heatmap(COUNTS, highlight=3)
    dead, used = _trace(fig, "dead"), _trace(fig, "used")
    dead_z, used_z = np.array(dead.z, dtype=float), np.array(used.z, dtype=float)
    assert dead_z.shape == used_z.shape == (3, 4)
    ids = np.array(used.customdata)[..., 0].reshape(-1)[:10]
    np.testing.assert_array_equal(ids, np.arange(10))
    flat_dead = ~np.isnan(dead_z.reshape(-1)[:10])
    np.testing.assert_array_equal(flat_dead, COUNTS == 0)
    np.testing.assert_allclose(used_z.reshape(-1)[:10][COUNTS > 0], np.log10(1 + COUNTS[COUNTS > 0]))
    assert np.isnan(used_z.reshape(-1)[10:]).all()  # padding cells are empty
    assert "4 dead" in fig.layout.title.text
    ring = _trace(fig, "code 3")
    assert (ring.x[0], ring.y[0]) == (3, 0)
    fig.to_json()


def test_usage_heatmap_selectable_carries_every_code_id():
    fig = plots.usage_heatmap(COUNTS, selectable=True)
    ids = np.concatenate([np.array(t.customdata)[:, 0] for t in fig.data if t.customdata is not None])
    np.testing.assert_array_equal(np.sort(ids), np.arange(10))
    dead = _trace(fig, "dead")
    np.testing.assert_array_equal(np.array(dead.customdata)[:, 0], np.flatnonzero(COUNTS == 0))
    assert plots.selected_code({"selection": {"points": [{"customdata": [7, 30]}]}}) == 7


def test_usage_histogram_counts_used_codes():
    fig = plots.usage_histogram(COUNTS)
    bars = fig.data[0]
    assert sum(bars.y) == 6  # every used code in exactly one bin
    assert "4 dead" in fig.layout.title.text
    empty = plots.usage_histogram(np.zeros(5, dtype=int))
    assert "5 dead" in empty.layout.title.text


def test_usage_over_steps_heatmap():
    counts = np.array([[0, 0, 3], [5, 5, 0], [1, 0, 1], [0, 0, 0]])  # K=4, S=3
    fig = plots.usage_over_steps([10, 20, 30], counts, sort="id")
    dead, used = fig.data
    z = np.array(used.z, dtype=float)
    assert z.shape == (4, 3) and list(used.x) == ["10", "20", "30"]
    np.testing.assert_array_equal(~np.isnan(np.array(dead.z, dtype=float)), counts == 0)
    by_first = plots.usage_over_steps([10, 20, 30], counts, sort="first_use")
    labels = [row[0] for row in by_first.data[1].customdata]
    assert labels == ["code 1", "code 2", "code 0", "code 3"]  # first used at step 10, 10, 30, never
    banded = plots.usage_over_steps([10, 20, 30], np.ones((10, 3), dtype=int), max_rows=3)
    assert np.array(banded.data[1].z).shape == (3, 3)
    with pytest.raises(ValueError):
        plots.usage_over_steps([10, 20], counts)
    fig.to_json()


def test_embedding_scatter():
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(10, 2))
    lat = rng.normal(size=(7, 2))
    fig = plots.embedding_scatter(xy, COUNTS, latents_xy=lat, method="umap", highlight=3)
    assert fig.data[0].name.startswith("encoder outputs") and len(fig.data[0].x) == 7
    dead, used = _trace(fig, "dead codes"), _trace(fig, "used codes")
    assert len(dead.x) + len(used.x) == 10
    np.testing.assert_array_equal(np.array(dead.customdata)[:, 0], np.flatnonzero(COUNTS == 0))
    np.testing.assert_array_equal(np.array(used.customdata)[:, 1], COUNTS[COUNTS > 0])
    np.testing.assert_allclose(np.array(used.marker.color), np.log10(1 + COUNTS[COUNTS > 0]))
    assert "UMAP" in fig.layout.title.text and _trace(fig, "code 3").x[0] == pytest.approx(xy[3, 0])
    with pytest.raises(ValueError):
        plots.embedding_scatter(xy[:5], COUNTS)
    fig.to_json()


def test_training_curves_figure():
    frame = pd.DataFrame({
        "step": [1, 2, 3, 1, 2, 3, 3],
        "split": ["train"] * 6 + ["val"],
        "metric": ["loss"] * 3 + ["usage"] * 3 + ["usage"],
        "value": [1.0, 0.5, 0.25, 0.1, 0.2, 0.3, 0.35],
    })
    fig = plots.training_curves(frame)
    names = sorted(t.name for t in fig.data)
    assert names == ["train/loss", "train/usage", "val/usage"]
    assert _trace(fig, "val/usage").line.dash == "dash"
    assert fig.layout.yaxis.type == "log"  # losses panel
    empty = plots.training_curves(pd.DataFrame(columns=["step", "split", "metric", "value"]))
    assert "No metrics" in empty.layout.title.text


def test_selected_code():
    assert plots.selected_code({"selection": {"points": []}}) is None
    assert plots.selected_code(None) is None
    assert plots.selected_code({"points": [{"customdata": 4}]}) == 4
