"""Reconstruction results the apps show: sizes, metrics consistent with vqexplore.metrics,
token maps that encode the ids, lossless round trips."""
import math

import numpy as np
import pytest
import torch

from vqexplore import VQModel
from vqexplore.data import builtin_photos, image_to_tensor
from vqexplore.metrics import psnr, ssim, to_unit
from vqexplore.reconstruct import (NATIVE_MAX_PIXELS, colorize_tokens, error_heatmap, prepare_image,
                                   reconstruct, token_palette)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VQModel(quantizer="vq", codebook_size=256, code_dim=8, hidden_dim=16, n_resblocks=1).eval()


def test_prepare_image_modes():
    photo = builtin_photos()[0][1]
    assert prepare_image(photo, "64").shape == (64, 64, 3)
    native = prepare_image(photo, "native")
    h, w, _ = native.shape
    assert h % 4 == 0 and w % 4 == 0 and h * w <= NATIVE_MAX_PIXELS
    with pytest.raises(ValueError):
        prepare_image(photo, "huge")


def test_reconstruct_matches_library_metrics(model):
    photos = [prepare_image(p, "64") for _, p in builtin_photos()[:3]]
    photos.append(prepare_image(builtin_photos()[3][1], "native", max_pixels=96 * 128))
    results = reconstruct(model, photos)
    assert len(results) == 4
    for img, r in zip(photos, results):
        assert r.original is img
        assert r.reconstruction.shape == img.shape and r.reconstruction.dtype == np.uint8
        assert r.error_map.shape == img.shape and r.token_map.shape == img.shape
        assert r.indices.shape == (img.shape[0] // 4, img.shape[1] // 4)
        assert r.num_tokens == r.indices.size
        assert r.bits == pytest.approx(r.num_tokens * 8.0)
        x = image_to_tensor(img)[None]
        with torch.no_grad():
            out = model(x)
        assert np.array_equal(r.indices, out.indices[0].numpy())
        a, b = to_unit(x), to_unit(out.reconstruction.clamp(-1, 1))
        assert r.psnr == pytest.approx(float(psnr(a, b)[0]), rel=1e-5)
        assert r.ssim == pytest.approx(float(ssim(a, b)[0]), rel=1e-5, abs=1e-6)
        assert math.isfinite(r.psnr) and r.lpips is None


def test_token_map_encodes_ids():
    pal = token_palette(1000)
    assert pal.shape == (1000, 3) and pal.dtype == np.uint8
    assert len({tuple(c) for c in pal[:64]}) == 64  # neighbouring ids differ
    ids = np.array([[0, 1], [999, 5]])
    img = colorize_tokens(ids, 1000, cell=4)
    assert img.shape == (8, 8, 3)
    assert (img[:4, :4] == pal[0]).all() and (img[4:, :4] == pal[999]).all()


def test_error_heatmap_zero_for_identical():
    a = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    same = error_heatmap(a, a)
    assert (same == same[0, 0]).all()
    diff = error_heatmap(a, 255 - a)
    assert diff.mean() > same.mean()
