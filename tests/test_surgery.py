"""Token surgery (vqexplore.surgery): edits are exact, only the edited cells' decoder footprint
changes, and the footprint is tight (real SimpleCNN decoders with random weights)."""
import numpy as np
import pytest
import torch

from vqexplore import VQModel
from vqexplore.surgery import (box_cells, cells_from_points, cells_mask, decode_grid, decoder_footprint,
                               edit_tokens, nearest_codes, token_surgery)


def _model(quantizer="vq", hidden_dim=32, n_resblocks=2, seed=0):
    torch.manual_seed(seed)
    cfg = dict(quantizer="fsq", levels=[5, 4, 3]) if quantizer == "fsq" else dict(quantizer=quantizer,
                                                                                  codebook_size=64, code_dim=8)
    model = VQModel(**cfg, hidden_dim=hidden_dim, n_resblocks=n_resblocks).eval()
    if quantizer == "vq":
        with torch.no_grad():
            model.quantizer.embedding.normal_(0, 1)  # spread codes: every edit changes the decode
    return model


def _bbox(mask):
    ys, xs = np.nonzero(mask)
    return ys.min(), ys.max(), xs.min(), xs.max()


@pytest.mark.parametrize("quantizer,hidden,blocks", [("vq", 32, 2), ("vq", 16, 1), ("fsq", 32, 2), ("simvq", 16, 0)])
@pytest.mark.parametrize("cells", [[(5, 7)], [(0, 0)], [(15, 15)], "box", "scatter"])
def test_only_the_footprint_changes_and_it_is_tight(quantizer, hidden, blocks, cells):
    model = _model(quantizer, hidden, blocks)
    ids = np.random.default_rng(1).integers(0, model.codebook_size, (16, 16))
    if cells == "box":
        cells = box_cells((16, 16), 9, 2, 12, 5)
    elif cells == "scatter":
        cells = [(1, 14), (8, 8), (14, 2)]
    mask = cells_mask((16, 16), cells)
    edited = ids.copy()
    edited[mask] = (ids[mask] + 7) % model.codebook_size  # another code in every edited cell
    with torch.no_grad():
        before = model.decode_indices(torch.from_numpy(ids)[None])[0]
        after = model.decode_indices(torch.from_numpy(edited)[None])[0]
    footprint = decoder_footprint(model, mask, (16, 16))
    assert footprint.shape == (64, 64)
    diff = (before != after).any(0).numpy()
    # Exact: every pixel outside the footprint is bit-identical (floats, before any rounding).
    assert not (diff & ~footprint).any()
    assert torch.equal(before[:, torch.from_numpy(~footprint)], after[:, torch.from_numpy(~footprint)])
    # Tight: for each edited cell the changed pixels reach every edge of its predicted square.
    for r, c in zip(*np.nonzero(mask)):
        own = decoder_footprint(model, [(r, c)], (16, 16))
        one = ids.copy()
        one[r, c] = edited[r, c]
        with torch.no_grad():
            changed = (model.decode_indices(torch.from_numpy(one)[None])[0] != before).any(0).numpy()
        assert _bbox(changed) == _bbox(own)


def test_footprint_size_of_the_study_model():
    model = VQModel(quantizer="vq", codebook_size=16, code_dim=4)  # hidden 256, 2 residual blocks
    fp = decoder_footprint(model, [(8, 8)], (16, 16))
    y0, y1, x0, x1 = _bbox(fp)
    assert (y1 - y0 + 1, x1 - x0 + 1) == (34, 34)  # 3 tokens either side, two stride-2 transposed convs
    assert fp.sum() == 34 * 34
    corner = decoder_footprint(model, [(0, 0)], (16, 16))
    assert _bbox(corner) == (0, 18, 0, 18)  # clipped at the border


def test_token_surgery_result_and_psnr():
    model = _model("vq", 16, 1)
    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        ids = model.encode(torch.from_numpy(original).permute(2, 0, 1)[None].float() / 127.5 - 1)[0].numpy()
    new_code = int((ids[2, 3] + 1) % 64)
    r = token_surgery(model, ids, [(2, 3)], new_code, original=original)
    assert r.edited[2, 3] == new_code and (r.edited != r.indices).sum() == 1
    assert r.cells.sum() == 1 and r.cells[2, 3]
    assert r.before.shape == r.after.shape == (32, 32, 3) and r.before.dtype == np.uint8
    np.testing.assert_array_equal(r.before, decode_grid(model, ids))
    np.testing.assert_array_equal(r.after, decode_grid(model, r.edited))
    assert r.changed.any() and not (r.changed & ~r.footprint).any()
    assert r.psnr_delta == pytest.approx(r.psnr_after - r.psnr_before)
    assert np.isfinite(r.psnr_between)
    # The same code again changes nothing.
    same = token_surgery(model, ids, [(2, 3)], int(ids[2, 3]), original=original)
    assert not same.changed.any() and same.psnr_between == 100.0 and same.psnr_delta == 0.0
    # Without the original: no PSNR against it.
    assert token_surgery(model, ids, [(0, 0)], 1).psnr_before is None


def test_nearest_codes():
    model = _model("vq")
    vectors = model.codebook_vectors().detach()
    ids, dist = nearest_codes(model, 5, k=3)
    brute = (vectors - vectors[5]).norm(dim=1)
    brute[5] = float("inf")
    assert ids.tolist() == brute.argsort()[:3].tolist()
    np.testing.assert_allclose(dist, brute.sort().values[:3].numpy(), rtol=1e-5)
    among = np.zeros(64, bool)
    among[[5, 40, 41]] = True
    assert set(nearest_codes(model, 5, k=5, among=among)[0].tolist()) == {40, 41}
    # FSQ: neighbours on the grid, ties broken by id.
    fsq = _model("fsq")
    ids, dist = nearest_codes(fsq, 0, k=2)
    assert ids.tolist() == [1, 5] and dist[0] == dist[1]
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        nearest_codes(model, 64)


def test_bad_edits_say_what_is_wrong():
    ids = np.zeros((4, 4), np.int64)
    with pytest.raises(ValueError, match="outside the 4 x 4 token grid"):
        edit_tokens(ids, [(4, 0)], 1)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        edit_tokens(ids, [(0, 0)], 8, codebook_size=8)
    with pytest.raises(ValueError, match="shape"):
        edit_tokens(ids, np.ones((3, 3), bool), 1)
    assert box_cells((4, 4), 3, 3, 1, 1).sum() == 9  # corners in any order
    assert box_cells((4, 4), -2, -2, 9, 0).sum() == 4  # clipped to the grid
    points = [{"customdata": [1, 2, 7]}, {"customdata": [9, 9]}, {"x": 1}]
    assert np.argwhere(cells_from_points(points, (4, 4))).tolist() == [[1, 2]]


def test_cells_as_text():
    from vqexplore.surgery import format_cells, majority_code, parse_cells

    mask = parse_cells("2-3,1-2; 0,0", (4, 4))
    assert np.argwhere(mask).tolist() == [[0, 0], [2, 1], [2, 2], [3, 1], [3, 2]]
    assert parse_cells("", (4, 4)).sum() == 0 and parse_cells("3-1,2", (4, 4)).sum() == 3
    box = box_cells((8, 8), 1, 2, 3, 5)
    assert format_cells(box) == "1-3,2-5" and (parse_cells(format_cells(box), (8, 8)) == box).all()
    assert format_cells(mask) == "0,0; 2,1; 2,2; 3,1; 3,2" and (parse_cells(format_cells(mask), (4, 4)) == mask).all()
    assert format_cells(np.zeros((2, 2), bool)) == "" and format_cells(cells_mask((4, 4), [(1, 1)])) == "1,1"
    with pytest.raises(ValueError, match="type row,col"):
        parse_cells("three, four", (4, 4))
    with pytest.raises(ValueError, match="outside the 4 x 4 token grid"):
        parse_cells("0-4,0", (4, 4))
    ids = np.array([[1, 2], [2, 3]])
    assert majority_code(ids, np.ones((2, 2), bool)) == 2
    assert majority_code(ids, np.array([[True, False], [False, True]])) == 1  # tie: lowest id
    assert majority_code(ids, np.zeros((2, 2), bool)) is None
