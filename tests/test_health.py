"""Codebook health: dead codes told apart by their distance to the data, and a diagnosis that
names the remedies for what it sees."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vqexplore import VQModel, plots
from trainer.sweep import read_rows, remedy_rows
from vqexplore.health import codebook_health
from vqexplore.quantizers import nearest_code


def _latents(n=600, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(8, d, generator=g)[torch.randint(8, (n,), generator=g)]
            + 0.05 * torch.randn(n, d, generator=g)).numpy()


def _model_with(codes: np.ndarray) -> VQModel:
    model = VQModel(quantizer="vq", codebook_size=codes.shape[0], code_dim=codes.shape[1], hidden_dim=8)
    with torch.no_grad():
        model.quantizer.embedding.copy_(torch.as_tensor(codes))
    return model


def _counts(model, latents):
    idx = nearest_code(torch.as_tensor(latents), model.codebook_vectors().detach())
    return np.bincount(idx.numpy(), minlength=model.codebook_size)


def test_codes_far_from_the_data_call_for_restarts():
    lat = _latents()
    codes = np.concatenate([lat[:8], np.full((56, 4), 40.0)])  # 8 codes on the data, 56 far away
    model = _model_with(codes.astype(np.float32))
    rows = remedy_rows(read_rows(Path(__file__).resolve().parents[1] / "docs" / "cpu_sweep.json"))
    h = codebook_health(model, lat, _counts(model, lat), rows)
    assert int(h.dead.sum()) >= 56 and h.dead_far >= 56
    assert "far from every encoder output" in h.diagnosis[0] and "Dead-code restart" in h.diagnosis[0]
    # the sweep rows that tried each remedy come from the rows' configs, passed in as data
    assert {"vq-16384-restart", "vq-16384-kmeans-restart"} <= set(rows["dead-code restart"])
    assert "vq-16384-kmeans" not in rows["dead-code restart"] and "vq-512" not in sum(rows.values(), ())
    assert all(f"`{row}`" in h.diagnosis[0] for row in rows["dead-code restart"])
    assert "`" not in codebook_health(model, lat, _counts(model, lat)).diagnosis[0]  # no rows given: none named


def test_crowded_codes_call_for_spreading_the_assignments():
    lat = _latents()
    # Every code a copy of one data point plus a tiny offset: among the data, but one neighbour
    # wins almost every token.
    base = lat[:1].repeat(64, 0) + 1e-3 * np.random.default_rng(0).standard_normal((64, 4))
    model = _model_with(base.astype(np.float32))
    h = codebook_health(model, lat, _counts(model, lat))
    assert h.dead_near > h.dead_far
    assert "crowded" in h.diagnosis[0] and "Entropy regularisation" in h.diagnosis[0]


def test_norm_spread_and_a_healthy_codebook():
    lat = _latents(d=4)
    codes = lat[np.linspace(0, len(lat) - 1, 8).astype(int)].astype(np.float32)
    model = _model_with(codes)
    h = codebook_health(model, lat, np.full(8, 10))
    assert h.diagnosis[0].startswith("Healthy")
    codes[0] *= 50
    h = codebook_health(_model_with(codes), lat, np.full(8, 10))
    assert h.norm_spread > 0.5 and any("l2-normalised" in s for s in h.diagnosis)
    with pytest.raises(ValueError, match="one entry per code"):
        codebook_health(model, lat, np.zeros(3))


def test_implicit_grids_are_not_told_to_restart():
    model = VQModel(quantizer="fsq", levels=[4, 4], hidden_dim=8)
    lat = np.random.default_rng(0).uniform(-0.2, 0.2, (500, 2)).astype(np.float32)  # the centre cells only
    h = codebook_health(model, lat, _counts(model, lat))
    assert not h.explicit and "fixed grid" in h.diagnosis[0] and "restart" not in h.diagnosis[0].split("no restart")[1]
    fig = plots.health_distances(h.nearest, h.dead, h.far_threshold)
    assert len(fig.data) == 2


# --- advice read from the checkpoint's config (the demo checkpoints in checkpoints/) -------------

def _demo_health(name):
    import vqexplore
    from vqexplore import analysis
    from vqexplore.data import validation_batch
    from vqexplore.projection import encoder_outputs

    from helpers.servers import ROOT as REPO

    model = vqexplore.load(str(REPO / "checkpoints" / name))
    enc = analysis.encode_sample(model, validation_batch("builtin", n=64, size=64))
    return codebook_health(model, encoder_outputs(model, None, max_points=8192, encoded=enc),
                           enc.counts(model.codebook_size))


def test_restart_checkpoint_is_not_told_to_use_what_it_uses():
    h = _demo_health("vq-4096-restart")
    text = " ".join(h.diagnosis)
    assert h.config["kmeans_init"] and h.config["dead_code_threshold"] > 0
    assert "Dead-code restart moves" not in text and "dead-code restart moves" not in text
    assert "k-means init starts" not in text
    if not text.startswith("Healthy"):
        assert "already uses" in text and ("Try next" in text or "Beyond that" in text)


def test_l2_checkpoint_is_not_told_to_use_l2_and_its_norms_are_said_to_be_one():
    h = _demo_health("vq-l2-4096")
    text = " ".join(h.diagnosis)
    assert "l2-normalised codes keep codes" not in text and "l2-normalised codes remove" not in text
    assert h.norms_constant and "norm 1" in text
    fig = plots.code_norms(h.norms, h.dead)
    lo, hi = fig.layout.xaxis.range
    assert hi - lo >= 0.1  # not a 0.9999999-1.0000001 axis of rounding noise


def test_advice_follows_the_config():
    from vqexplore.health import CodebookHealth, diagnose

    counts = np.r_[np.ones(10, int), np.zeros(90, int)]
    nearest = np.r_[np.ones(10), np.full(90, 10.0)]  # dead codes far from the data
    h = CodebookHealth(100, counts, nearest, np.ones(100) + np.arange(100) * 0.001, 1.5, True)
    assert "Dead-code restart moves" in diagnose(h)[0]
    h.config = {"quantizer": "vq", "dead_code_threshold": 0.5, "kmeans_init": True, "l2_norm": True}
    d = diagnose(h)[0]
    assert "already uses dead-code restart and k-means init and l2-normalised codes" in d
    assert "moves them" not in d and "FSQ" in d and "dead_code_threshold` (now 0.5)" in d
