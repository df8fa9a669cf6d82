"""The figures of the surgery, rate-distortion and aligned-codes views (vqexplore.plots)."""
import numpy as np
import pytest

from vqexplore import plots
from vqexplore.ratedistortion import RatePoint, rate_distortion_table
from vqexplore.surgery import cells_from_points


def test_token_grid_cells_are_clickable_and_carry_row_col_code():
    image = np.zeros((32, 48, 3), np.uint8)
    ids = np.arange(8 * 12).reshape(8, 12)
    cells = np.zeros((8, 12), bool)
    cells[2, 5] = True
    fig = plots.token_grid(image, ids, cells=cells, size=480)
    img, tokens, selected = fig.data
    assert img.type == "image" and len(tokens.x) == 96
    custom = np.asarray(tokens.customdata)
    assert custom[5 + 2 * 12].tolist() == [2, 5, 29]
    # Cell (2, 5) is centred on its 4 x 4 pixel block.
    assert (tokens.x[29], tokens.y[29]) == (5 * 4 + 1.5, 2 * 4 + 1.5)
    assert (selected.x[0], selected.y[0]) == (tokens.x[29], tokens.y[29])
    assert fig.layout.width == 490
    points = [{"customdata": list(custom[i])} for i in (0, 29)]
    assert np.argwhere(cells_from_points(points, (8, 12))).tolist() == [[0, 0], [2, 5]]
    # As Streamlit 1.67 hands them back from a browser selection: customdata rows as dicts.
    as_dicts = [{"customdata": {"0": 2, "1": 5, "2": 29}, "x": 21.5}]
    assert np.argwhere(cells_from_points(as_dicts, (8, 12))).tolist() == [[2, 5]]
    assert plots.selected_code({"selection": {"points": [{"customdata": {"0": 17, "1": 3}}]}}) == 17
    assert fig.layout.dragmode is None  # Streamlit's "pan": a click selects a cell
    big = plots.token_grid(np.zeros((512, 512, 3), np.uint8), np.zeros((128, 128), int))
    assert big.data[1].type == "scattergl"
    fig.to_json()


def _frame():
    pts = [RatePoint("vq-a", "VQ", "plain", 512, 32, 64, 2.5, 17.0, 0.45, None, "x"),
           RatePoint("fsq-b", "FSQ", "levels 8-8-8", 512, 32, 64, 5.4, 20.4, 0.6, None, "x"),
           RatePoint("simvq-c", "SimVQ", "plain", 2048, 32, 64, 4.9, None, None, None, "x")]
    frame = rate_distortion_table(pts)
    frame["set"] = ["selected", "CPU sweep", "CPU sweep"]
    return frame


def test_rate_distortion_plot():
    fig = plots.rate_distortion(_frame(), highlight=["vq-a"])
    names = [t.name for t in fig.data]
    assert names == ["VQ · selected", "FSQ · CPU sweep"]  # simvq-c has no PSNR: not drawn
    vq = fig.data[0]
    assert list(vq.x) == [64 * 2.5] and list(vq.y) == [17.0] and list(vq.text) == ["vq-a"]
    assert vq.marker.color == plots.QUANTIZER_COLORS["VQ"] and vq.marker.symbol == "circle"
    assert fig.data[1].marker.symbol == "diamond-open"
    preset_too = plots.rate_distortion(_frame(), highlight=["vq-a", "fsq-b"])
    assert list(preset_too.data[1].text) == [""]  # a preset point is never labelled
    fixed = plots.rate_distortion(_frame(), x="bits (fixed)", y="SSIM")
    assert list(fixed.data[0].x) == [64 * 9]
    assert plots.rate_distortion(_frame(), y="LPIPS").layout.yaxis.autorange == "reversed"
    with pytest.raises(ValueError):
        plots.rate_distortion(_frame(), x="bits")
    fig.to_json()


def test_alignment_scatter():
    fig = plots.alignment_scatter(np.array([0.1, 2.0, 0.2]), np.array([5, 0, 9]), np.array([True, False, True]),
                                  np.array([3, 4, 7]), 0.5)
    keep, moved = fig.data
    assert keep.name == "persists (2)" and moved.name == "moved / replaced (1)"
    assert list(moved.y) == [1]  # a zero count sits at 1 on the log axis
    assert np.asarray(keep.customdata)[:, 0].tolist() == [3, 7]
    fig.to_json()
