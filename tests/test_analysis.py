"""vqexplore.analysis: usage, projections, galleries, comparison rows, training curves."""
import json
import os
import stat

import numpy as np
import pytest
import torch

from vqexplore import VQModel, analysis
from vqexplore.metrics import codebook_stats, evaluate

TINY = dict(hidden_dim=8, n_resblocks=1)
CONFIGS = {
    "vq": dict(quantizer="vq", codebook_size=32, code_dim=4),
    "vq-l2": dict(quantizer="vq", codebook_size=32, code_dim=4, l2_norm=True),
    "fsq": dict(quantizer="fsq", levels=[5, 4, 3]),
    "simvq": dict(quantizer="simvq", codebook_size=32, code_dim=4),
}


def _model(name="vq", seed=0, **extra):
    torch.manual_seed(seed)
    model = VQModel(**CONFIGS[name], **TINY, **extra).eval()
    if name in ("vq", "vq-l2"):
        # Spread the codebook like the encoder outputs so that many codes are used.
        with torch.no_grad():
            model.quantizer.embedding.normal_(0, 0.3)
    return model


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, 3, 32, 32, generator=g) * 2 - 1


@pytest.mark.parametrize("name", list(CONFIGS))
def test_usage_counts_match_encode(name, images):
    model = _model(name)
    counts = analysis.usage_counts(model, images, batch_size=4)
    ids = model.encode(images)
    assert counts.shape == (model.codebook_size,) and counts.dtype == np.int64
    assert counts.sum() == ids.numel() == 6 * 8 * 8
    np.testing.assert_array_equal(counts, torch.bincount(ids.flatten(), minlength=model.codebook_size).numpy())
    stats = analysis.usage_stats(counts)
    assert stats == codebook_stats(torch.as_tensor(counts))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_encode_sample_latents_live_in_code_space(name, images):
    """The nearest code of every kept encoder output is the code the quantizer chose, so the
    latents can be projected with the codebook and measured against it."""
    model = _model(name)
    enc = analysis.encode_sample(model, images, batch_size=4)
    assert enc.indices.shape == (6, 8, 8) and enc.latents.shape == (6, 8, 8, model.code_dim)
    np.testing.assert_array_equal(enc.counts(model.codebook_size), analysis.usage_counts(model, images))
    codebook = model.codebook_vectors().detach().float()
    lat = torch.from_numpy(enc.latents).reshape(-1, model.code_dim)
    nearest = torch.cdist(lat, codebook).argmin(1).numpy()
    assert (nearest == enc.indices.reshape(-1)).mean() > 0.999  # ties at float precision aside


def test_usage_over_steps(tmp_path, images):
    run = tmp_path / "run"
    for i, step in enumerate((5, 10, 20, 40)):
        _model("vq", seed=i).save_pretrained(run / "checkpoints" / f"step-{step:08d}")
    (run / "checkpoints" / "tmp-half-written").mkdir()
    over = analysis.usage_over_steps(run, images)
    np.testing.assert_array_equal(over.steps, [5, 10, 20, 40])
    assert over.counts.shape == (32, 4) and over.codebook_size == 32
    for i in range(4):
        np.testing.assert_array_equal(over.counts[:, i], analysis.usage_counts(_model("vq", seed=i), images))
    np.testing.assert_allclose(over.usage(), (over.counts > 0).mean(0))
    spread = analysis.usage_over_steps(run, images, max_checkpoints=2)
    np.testing.assert_array_equal(spread.steps, [5, 40])
    with pytest.raises(ValueError, match="no checkpoints"):
        analysis.usage_over_steps(tmp_path / "empty", images)


def test_project_codebook_pca_and_umap():
    rng = np.random.default_rng(0)
    codes = np.concatenate([rng.normal(0, 0.1, (60, 8)), rng.normal(3, 0.1, (60, 8))]).astype(np.float32)
    latents = rng.normal(0, 0.1, (20, 8)).astype(np.float32)
    pca = analysis.project_codebook(codes, "pca", latents=latents)
    assert pca.method == "pca" and pca.codes.shape == (120, 2) and pca.latents.shape == (20, 2)
    # The first PCA axis separates the two clusters.
    assert abs(pca.codes[:60, 0].mean() - pca.codes[60:, 0].mean()) > 10 * pca.codes[:60, 0].std()
    umap_a = analysis.project_codebook(codes, "umap", latents=latents, seed=0, n_epochs=50)
    umap_b = analysis.project_codebook(codes, "umap", latents=latents, seed=0, n_epochs=50)
    assert umap_a.codes.shape == (120, 2) and umap_a.latents.shape == (20, 2)
    assert np.isfinite(umap_a.codes).all()
    np.testing.assert_array_equal(umap_a.codes, umap_b.codes)  # seeded: reproducible
    # Neighbourhoods survive: each code's 2-D nearest neighbour is in its own cluster.
    d = np.linalg.norm(umap_a.codes[:, None] - umap_a.codes[None], axis=-1) + np.eye(120) * 1e9
    assert ((d.argmin(1) < 60) == (np.arange(120) < 60)).all()
    # 2-D codebooks are shown as they are, whatever the method.
    assert analysis.project_codebook(codes[:, :2], "umap").method == "pca"
    with pytest.raises(ValueError, match="method"):
        analysis.project_codebook(codes, "tsne")
    with pytest.raises(ValueError, match="latents"):
        analysis.project_codebook(codes, "pca", latents=latents[:, :3])


def _tree_state(folder):
    return {p.relative_to(folder): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_cached_projection_on_disk_keyed_by_weights(tmp_path, images):
    ckpt = tmp_path / "ckpt"
    _model("vq").save_pretrained(ckpt)
    before = _tree_state(ckpt)
    cache = tmp_path / "cache"
    model = _model("vq")
    first = analysis.cached_projection(ckpt, model, "pca", images=images, cache=cache)
    assert not first.from_cache and first.latents.shape == (6 * 64, 2)
    again = analysis.cached_projection(ckpt, model, "pca", images=images, cache=cache)
    assert again.from_cache
    np.testing.assert_array_equal(first.codes, again.codes)
    np.testing.assert_array_equal(first.latents, again.latents)
    assert len(list((cache / "projections").glob("*.npz"))) == 1
    # Other parameters are other entries; the checkpoint folder is never touched.
    analysis.cached_projection(ckpt, model, "pca", cache=cache)
    assert len(list((cache / "projections").glob("*.npz"))) == 2
    assert _tree_state(ckpt) == before
    # New weights in the same folder: a new key, recomputed.
    other = _model("vq", seed=1)
    other.save_pretrained(ckpt)
    fresh = analysis.cached_projection(ckpt, other, "pca", images=images, cache=cache)
    assert not fresh.from_cache
    # VQEXPLORE_CACHE_DIR is the default location.
    os.environ["VQEXPLORE_CACHE_DIR"] = str(tmp_path / "envcache")
    try:
        assert analysis.cache_dir() == tmp_path / "envcache"
    finally:
        del os.environ["VQEXPLORE_CACHE_DIR"]


def test_cached_projection_survives_unwritable_cache_and_damaged_entries(tmp_path):
    ckpt = tmp_path / "ckpt"
    model = _model("vq")
    model.save_pretrained(ckpt)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        proj = analysis.cached_projection(ckpt, model, "pca", cache=locked)
        assert proj.codes.shape == (32, 2) and not proj.from_cache
    finally:
        locked.chmod(stat.S_IRWXU)
    cache = tmp_path / "cache"
    analysis.cached_projection(ckpt, model, "pca", cache=cache)
    entry = next((cache / "projections").glob("*.npz"))
    entry.write_bytes(b"not an npz")
    proj = analysis.cached_projection(ckpt, model, "pca", cache=cache)
    assert not proj.from_cache and proj.codes.shape == (32, 2)


def test_receptive_field_matches_gradients():
    """The crop the gallery takes is exactly the set of pixels that can change a token."""
    torch.manual_seed(0)
    model = VQModel(quantizer="vq", codebook_size=8, code_dim=4, hidden_dim=8, n_resblocks=2)
    size, first, stride = analysis.receptive_field(model)
    assert (size, first, stride) == (34, 1.5, 4)
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    i, j = 8, 7
    model.encode_latents(x)[0, :, i, j].sum().backward()
    rows, cols = torch.nonzero(x.grad[0].abs().sum(0)).T
    lo_r, lo_c = first + stride * i - (size - 1) / 2, first + stride * j - (size - 1) / 2
    assert (int(rows.min()), int(rows.max())) == (lo_r, lo_r + size - 1)
    assert (int(cols.min()), int(cols.max())) == (lo_c, lo_c + size - 1)
    assert analysis.receptive_field(VQModel(quantizer="vq", codebook_size=8, code_dim=4, hidden_dim=8,
                                            n_resblocks=1))[0] == 26


def test_code_gallery(images):
    model = _model("vq")
    counts = analysis.usage_counts(model, images)
    code = int(counts.argmax())
    gallery = analysis.code_gallery(model, images, code, max_patches=5)
    size = analysis.receptive_field(model)[0]
    assert gallery.count == counts[code]
    assert gallery.patches.shape == (min(5, counts[code]), size, size, 3) and gallery.patches.dtype == np.uint8
    assert (np.diff(gallery.distances) >= 0).all()
    assert gallery.tile.shape == (16, 16, 3) and gallery.tile.dtype == np.uint8
    enc = analysis.encode_sample(model, images)
    for b, r, c in gallery.locations:
        assert enc.indices[b, r, c] == code
    # Without the outline, an interior crop is the image itself around the token.
    plain = analysis.code_gallery(model, images, code, max_patches=200, outline=False)
    from vqexplore.data import tensor_to_image

    for patch, (b, r, c) in zip(plain.patches, plain.locations):
        top, left = 4 * r + 2 - size // 2, 4 * c + 2 - size // 2
        if top >= 0 and left >= 0 and top + size <= 32 and left + size <= 32:
            np.testing.assert_array_equal(patch, tensor_to_image(images[b])[top:top + size, left:left + size])
            break
    else:
        pytest.fail("no interior token to check")
    # Reusing an encode_sample gives the same gallery.
    same = analysis.code_gallery(model, images, code, max_patches=5, encoded=enc)
    np.testing.assert_array_equal(same.patches, gallery.patches)
    dead = int(np.flatnonzero(counts == 0)[0])
    empty = analysis.code_gallery(model, images, dead)
    assert empty.count == 0 and empty.patches.shape[0] == 0 and empty.tile.shape == (16, 16, 3)
    with pytest.raises(ValueError, match="code must lie"):
        analysis.code_gallery(model, images, model.codebook_size)


def test_comparison_row_from_metrics_json_and_live(tmp_path, images):
    model = _model("vq-l2")
    ckpt = tmp_path / "ck"
    model.save_pretrained(ckpt)
    row = analysis.comparison_row("live", model, checkpoint_dir=ckpt, images=images)
    live = evaluate(model, [images])
    assert row["checkpoint"] == "live" and row["quantizer"] == "VQ" and row["l2 norm"] == "yes"
    assert row["codebook size"] == 32 and row["code dim"] == 4 and row["ema"] == "no"
    assert row["usage %"] == pytest.approx(100 * live["usage"])
    assert row["PSNR"] == pytest.approx(live["psnr"]) and row["SSIM"] == pytest.approx(live["ssim"])
    assert row["dead codes"] == live["dead_codes"] and row["rFID"] is None and row["LPIPS"] is None
    assert row["metrics from"] == "live (6 val images)"
    saved = {"usage": 0.25, "perplexity": 7.0, "dead_codes": 24, "psnr": 30.0, "ssim": 0.9, "lpips": None,
             "rfid": 12.5, "num_images": 1000}
    (ckpt / "metrics.json").write_text(json.dumps(saved))
    row = analysis.comparison_row("file", model, checkpoint_dir=ckpt, images=images)
    assert (row["usage %"], row["PSNR"], row["rFID"], row["dead codes"]) == (25.0, 30.0, 12.5, 24)
    assert row["metrics from"] == "metrics.json (1000 images)"
    assert list(analysis.comparison_table([row]).columns) == list(analysis.STUDY_COLUMNS)
    fsq = analysis.describe_config(_model("fsq").config)
    assert fsq["quantizer"] == "FSQ" and fsq["levels"] == "[5, 4, 3]" and fsq["codebook size"] == 60
    assert analysis.describe_config({"quantizer": "vq", "entropy_reg": 0.1, "ema_update": True})["entropy reg"] == "0.1"


def test_training_curves(tmp_path):
    rows = [{"step": s, "split": "train", "loss": 1 / s, "usage": s / 10, "perplexity": 2.0 * s, "lr": 4e-4,
             "time": 1.0, "epoch": 0} for s in range(1, 6)]
    rows.append({"step": 5, "split": "val", "psnr": 20.0, "ssim": 0.5, "usage": 0.4, "num_images": 8})
    text = "\n".join(json.dumps(r) for r in rows) + '\n{"step": 6, "split": "tra'  # a run still writing
    (tmp_path / "metrics.jsonl").write_text(text)
    frame = analysis.training_curves(tmp_path)
    assert list(frame.columns) == ["step", "split", "metric", "value"]
    loss = frame[(frame.metric == "loss")]
    assert loss.step.tolist() == [1, 2, 3, 4, 5] and loss.value.iloc[-1] == pytest.approx(0.2)
    assert set(frame.metric) == {"loss", "usage", "perplexity", "lr", "psnr", "ssim", "num_images"}
    assert set(frame[frame.metric == "usage"].split) == {"train", "val"}
    groups = analysis.curve_groups(frame)
    assert list(groups) == ["losses", "usage", "perplexity", "psnr", "ssim", "lr"]
    assert groups["losses"] == ["loss"] and groups["usage"] == ["usage"]
    assert analysis.training_curves(tmp_path / "nothing").empty
