"""The field's habits in every figure of vqexplore.plots (issue 18): decade-only log ticks, one
colour-blind-safe palette with twelve distinct colours, usage in %, units on axes, integer count
ticks, a live-codes view of the codes x steps heatmap, labels that do not pile up, bits per pixel,
and the Training page's charts (smoothing, runs overlaid, one legend per chart, log learning rate)."""
import numpy as np
import pandas as pd
import pytest

from vqexplore import analysis, plots
from vqexplore.ratedistortion import RatePoint, rate_distortion_table


def _lab(hex_colour):
    from skimage.color import rgb2lab

    rgb = np.array([[int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]])
    return rgb2lab(rgb[None])[0, 0]


def test_palette_has_twelve_distinct_colours_and_every_series_uses_it():
    assert len(set(plots.PALETTE)) == 12
    labs = np.array([_lab(c) for c in plots.PALETTE])
    gaps = np.linalg.norm(labs[:, None] - labs[None], axis=-1)[np.triu_indices(12, 1)]
    assert gaps.min() > 20  # CIELAB distance: no two near-identical blues
    assert set(plots.QUANTIZER_COLORS.values()) <= set(plots.PALETTE)
    assert len(set(plots.QUANTIZER_COLORS.values())) == len(plots.QUANTIZER_COLORS)
    curves = plots.usage_curves({f"ckpt {i}": np.arange(1, 20) + i for i in range(12)})
    assert len({t.line.color for t in curves.data}) == 12


def test_log_axes_label_decades_only():
    fig = plots.usage_curves({"a": np.r_[np.arange(1, 2000), np.zeros(10, int)]})
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.dtick == 1
    hist = plots.usage_histogram(np.r_[np.arange(1, 3000), np.zeros(5, int)])
    assert hist.layout.xaxis.type == "log" and hist.layout.xaxis.dtick == 1
    narrow = plots.go.Figure()
    plots.log_axis(narrow, "y", [0.02, 0.05])  # less than a decade: 1-2-5 ticks, never none
    assert narrow.layout.yaxis.dtick == "D2"


def test_count_axes_have_integer_ticks():
    hist = plots.usage_histogram(np.array([0, 1, 1, 2, 3]))  # at most 2 codes per bin
    assert hist.layout.yaxis.dtick == 1 and hist.layout.yaxis.tickformat == ",d"


def test_most_used_codes_never_lists_a_dead_code():
    counts = np.array([0, 5, 0, 0, 9, 0])
    assert analysis.most_used_codes(counts, 10) == [(4, 9), (1, 5)]
    assert analysis.most_used_codes(np.zeros(4), 3) == []


def test_live_codes_view_of_the_heatmap():
    counts = np.zeros((4096, 3), int)
    counts[[5, 77, 3000], :] = [[1, 2, 3], [0, 4, 0], [9, 0, 0]]
    full = plots.usage_over_steps([10, 20, 30], counts, sort="id")
    live = plots.usage_over_steps([10, 20, 30], counts, sort="id", live_only=True)
    assert np.array(full.data[1].z).shape[0] == 2048  # banded: the live ones are thin lines
    z = np.array(live.data[1].z, dtype=float)
    assert z.shape == (3, 3)  # one readable row per live code
    assert [row[0] for row in live.data[1].customdata] == ["code 5", "code 77", "code 3000"]
    assert "3 codes used" in live.layout.title.text and "%" in live.layout.title.text


def _points():
    pts = [RatePoint(f"vq-{i}", "VQ", "plain", 4096, 64, 256, 5.0 + i / 10, 22.0 + i / 3, 0.7, None, "x")
           for i in range(4)]
    pts.append(RatePoint("vq-32", "VQ", "plain", 512, 32, 64, 4.0, 18.0, 0.5, None, "x"))
    return rate_distortion_table(pts)


def test_rate_distortion_fixed_bits_labels_fan_out():
    frame = _points()
    fig = plots.rate_distortion(frame[frame["image size"] == 64], x="bits (fixed)",
                                highlight=[f"vq-{i}" for i in range(4)])
    positions = list(fig.data[0].textposition)
    assert len(set(positions)) == 4  # four labels on one x: four different spots
    assert fig.layout.yaxis.title.text == "PSNR (dB)" and "%{y:.2f} dB" in fig.data[0].hovertemplate


def test_rate_distortion_sizes_never_share_a_bits_per_image_axis():
    frame = _points()
    per_image = plots.rate_distortion(frame, x="bits (entropy)")
    assert per_image.layout.xaxis2 is not None and len(per_image.data) == 2  # one panel per image size
    per_pixel = plots.rate_distortion(frame, x="bpp (fixed)")
    assert len(per_pixel.data) == 1 and "per pixel" in per_pixel.layout.xaxis.title.text
    xs = sorted(per_pixel.data[0].x)
    assert xs[0] == pytest.approx(64 * 9 / 32 ** 2) and xs[-1] == pytest.approx(256 * 12 / 64 ** 2)


def test_embedding_scatter_3d_tall_with_visible_encoder_outputs_and_neighbours():
    rng = np.random.default_rng(0)
    counts = np.array([0, 3, 5, 0, 1])
    fig = plots.embedding_scatter(rng.normal(size=(5, 3)), counts, latents_xy=rng.normal(size=(9, 3)),
                                  highlight=1, neighbours=[2, 4])
    assert {t.type for t in fig.data} == {"scatter3d"} and fig.layout.height >= 700
    lat = fig.data[0]
    assert lat.name.startswith("encoder outputs") and lat.marker.opacity >= 0.4 and lat.marker.color != "grey"
    near = next(t for t in fig.data if (t.name or "").startswith("nearest codes"))
    assert list(np.asarray(near.customdata)[:, 0]) == [2, 4]


def test_ema_smoothing_is_tensorboards():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    w = 0.6
    expect, last = [], 0.0
    for i, v in enumerate(y, start=1):
        last = last * w + (1 - w) * v
        expect.append(last / (1 - w ** i))
    np.testing.assert_allclose(analysis.ema_smooth(y, w), expect)
    assert analysis.ema_smooth(y, 0.0).tolist() == y.tolist()
    assert analysis.ema_smooth([5.0], 0.9).tolist() == [5.0]  # debiased: no pull towards 0
    with pytest.raises(ValueError):
        analysis.ema_smooth(y, 1.0)


def _run(seed, lr_scale=1.0):
    rng = np.random.default_rng(seed)
    steps = np.arange(0, 500, 10)
    rows = []
    for s in steps:
        rows += [(s, "train", "loss", 0.5 * np.exp(-s / 200) + rng.uniform(0, 0.02)),
                 (s, "train", "usage", 0.3 + 0.001 * s / 5),
                 (s, "train", "lr", lr_scale * 1e-3 * min(1.0, (s + 1) / 100)),
                 (s, "train", "d_loss", 0.7 + rng.uniform(0, 0.1))]
    rows += [(s, "val", "psnr", 20 + s / 100) for s in steps[::10]]
    return pd.DataFrame(rows, columns=["step", "split", "metric", "value"])


def test_training_charts_overlay_runs_smooth_and_keep_one_legend_per_chart():
    charts = plots.training_charts({"run-a": _run(0), "run-b": _run(1, 0.5)}, smoothing=0.9)
    assert list(charts) == ["losses", "usage", "psnr", "lr"]  # new keys (d_loss) show up with no code change
    losses = charts["losses"]
    shown = [t for t in losses.data if t.showlegend is not False]
    assert {t.name for t in shown} == {"run-a · train/loss", "run-a · train/d_loss", "run-b · train/loss",
                                       "run-b · train/d_loss"}
    assert len({t.line.color for t in shown}) == 4  # one colour per (run, metric), one legend for this chart
    raw = [t for t in losses.data if t.showlegend is False]
    assert raw and all(t.opacity < 0.5 for t in raw)  # the raw curve stays faint under the smoothed one
    assert losses.layout.yaxis.type == "log" and losses.layout.yaxis.dtick in (1, "D2")
    lr = charts["lr"]
    assert lr.layout.yaxis.type == "log" and lr.layout.yaxis.title.text == "learning rate"
    usage = charts["usage"]
    assert max(max(t.y) for t in usage.data) > 1 and "%" in usage.layout.yaxis.title.text
    assert charts["psnr"].layout.yaxis.title.text == "PSNR (dB)"
    assert plots.training_charts({}) == {}


def test_sample_grids_of_a_run(tmp_path):
    (tmp_path / "samples").mkdir()
    for step in (200, 50):
        (tmp_path / "samples" / f"step-{step:08d}.png").write_bytes(b"png")
    assert [s for s, _ in analysis.sample_grids(tmp_path)] == [50, 200]
    assert analysis.sample_grids(tmp_path / "none") == []
