"""LFQ, BSQ and IBQ through the trainer: real training steps on the built-in photos, checkpoints,
``vqexplore.load``, and the analysis functions (usage counts, codebook vectors, code space,
galleries) on the loaded model; their config errors name the key."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

import vqexplore
from helpers.trainer_runs import write_config
from trainer import cli
from vqexplore import analysis
from vqexplore.data import validation_batch
from vqexplore.hub import read_run_metrics

MODELS = {
    "lfq": {"quantizer": "lfq", "codebook_size": 64, "code_dim": None},
    # BSQ with the factorised entropy (two groups of 3 bits), LFQ with the exact one
    "bsq": {"quantizer": "bsq", "codebook_size": 64, "code_dim": None, "diversity_gamma": 0.5,
            "entropy_group_bits": 3},
    "ibq": {"quantizer": "ibq", "codebook_size": 48, "code_dim": 8},
}
LOSSES = {"lfq": {"entropy", "commitment"}, "bsq": {"entropy", "commitment"},
          "ibq": {"quantization", "commitment", "codebook"}}


@pytest.mark.parametrize("name", list(MODELS))
def test_train_save_load_and_analyse(tmp_path, capsys, name):
    cfg = write_config(tmp_path / "c.yaml", name, tmp_path / "runs", model=MODELS[name],
                       train={"steps": 6, "ckpt_every": 3, "val_every": 0, "log_every": 2})
    rc = cli.main(["--cfg", str(cfg)])
    assert rc == 0, capsys.readouterr().err
    run = tmp_path / "runs" / name

    rows = [r for r in read_run_metrics(run) if r["split"] == "train"]
    assert [r["step"] for r in rows] == [2, 4, 6]
    for loss in LOSSES[name]:
        assert all(np.isfinite(r[f"{loss}_loss"]) for r in rows), loss
    saved = json.loads((run / "checkpoints" / "step-00000006" / "config.json").read_text())
    assert saved["quantizer"] == name

    model = vqexplore.load(run)
    assert type(model.quantizer).__name__ == name.upper()
    k, d = model.codebook_size, model.code_dim
    assert (k, d) == ((64, 6) if name != "ibq" else (48, 8))
    if name != "ibq":
        assert saved["code_dim"] == 6 and saved["entropy_loss_weight"] == 0.1  # effective values recorded
        assert saved["entropy_group_bits"] == MODELS[name].get("entropy_group_bits")
        assert model.quantizer.entropy_group_bits == saved["entropy_group_bits"]
    images = validation_batch("builtin", n=8, size=16)

    counts = analysis.usage_counts(model, images)
    assert counts.shape == (k,) and counts.sum() == 8 * 4 * 4
    book = model.codebook_vectors().detach()
    assert book.shape == (k, d)
    encoded = analysis.encode_sample(model, images)
    latents = analysis.encoder_outputs(model, images, encoded=encoded)
    assert latents.shape[1] == d
    if name == "bsq":  # BSQ's code space is the unit sphere, where its codes lie too
        np.testing.assert_allclose(np.linalg.norm(latents, axis=1), 1.0, rtol=1e-5)
        torch.testing.assert_close(book.norm(dim=1), torch.ones(k))
    # the decoder sees the codebook rows of the chosen ids
    with torch.no_grad():
        out = model.eval()(images)
        torch.testing.assert_close(model.quantizer.lookup(out.indices), out.quantized)
        torch.testing.assert_close(model.decode_indices(out.indices), out.reconstruction)
    used = int(np.argmax(counts))
    gallery = analysis.code_gallery(model, images, used, encoded=encoded)
    assert gallery.count == counts[used]


@pytest.mark.parametrize("model, expected", [
    ({"quantizer": "lfq", "codebook_size": 1000, "code_dim": None}, "model.codebook_size: must be a power of two >= 2"),
    ({"quantizer": "bsq", "codebook_size": 64, "code_dim": 8}, "model.code_dim: 8 contradicts codebook_size=64"),
    ({"quantizer": "vq", "entropy_loss_weight": 0.2},
     "model.entropy_loss_weight: applies to quantizer='lfq' or 'bsq' only"),
    ({"quantizer": "ibq", "diversity_gamma": 1.0}, "model.diversity_gamma: applies to quantizer='lfq' or 'bsq' only"),
    ({"quantizer": "lfq", "codebook_size": 64, "code_dim": None, "diversity_gamma": -1},
     "model.diversity_gamma: must be >= 0"),
    ({"quantizer": "vq", "entropy_group_bits": 4},
     "model.entropy_group_bits: applies to quantizer='lfq' or 'bsq' only"),
    ({"quantizer": "bsq", "codebook_size": 64, "code_dim": None, "entropy_group_bits": 7},
     "model.entropy_group_bits: must be null (the exact entropy) or a number of bits per group in [1, 6]"),
    ({"quantizer": "lfq", "codebook_size": 64, "code_dim": None, "entropy_group_bits": 0},
     "model.entropy_group_bits: must be null (the exact entropy) or a number of bits per group in [1, 6]"),
    ({"quantizer": "lfq", "codebook_size": 64, "code_dim": None, "entropy_group_bits": "factorised"},
     "model.entropy_group_bits: expected an integer or null"),
    ({"quantizer": "lfq", "codebook_size": 64, "code_dim": None, "entropy_group_bits": 2.5},
     "model.entropy_group_bits: expected an integer or null"),
])
def test_config_errors_name_the_key(tmp_path, capsys, model, expected):
    cfg = write_config(tmp_path / "c.yaml", "bad", tmp_path / "runs", model=model)
    rc = cli.main(["--cfg", str(cfg)])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert not (tmp_path / "runs").exists()


def test_yaml_keys_reach_the_quantizer(tmp_path):
    from trainer.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"quantizer": "bsq", "codebook_size": 16384,
                                              "entropy_loss_weight": 0.05, "entropy_temperature": 0.02,
                                              "entropy_group_bits": 7}}))
    cfg = load_config(path)
    assert cfg.model.code_dim == 14 and cfg.model.diversity_gamma == 1.0
    model = vqexplore.VQModel(**cfg.model.kwargs())
    q = model.quantizer
    assert (q.entropy_loss_weight, q.entropy_temperature, q.diversity_gamma) == (0.05, 0.02, 1.0)
    assert q.entropy_group_bits == 7 and model.config["entropy_group_bits"] == 7
