"""Rate-distortion points (vqexplore.ratedistortion): entropy in bits, points from comparison rows,
evaluated runs and the CPU sweep's rows (the real docs/cpu_sweep.json)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vqexplore import VQModel, analysis
from vqexplore.data import validation_batch
from vqexplore.metrics import perplexity
from trainer.sweep import read_rows
from vqexplore.ratedistortion import (RD_COLUMNS, entropy_bits, point_from_metrics, point_from_row, points_from_runs,
                                      points_from_sweep_rows, rate_distortion_table, tokens_per_image)

REPO = Path(__file__).resolve().parent.parent


def test_entropy_bits():
    assert entropy_bits([5, 5, 5, 5]) == pytest.approx(2.0)
    assert entropy_bits([7, 0, 0]) == 0.0
    assert entropy_bits(np.array([1, 1, 2])) == pytest.approx(1.5)
    counts = torch.tensor([3, 1, 0, 9, 4])
    assert entropy_bits(counts.numpy()) == pytest.approx(math.log2(perplexity(counts)))
    with pytest.raises(ValueError, match="all zero"):
        entropy_bits([0, 0])
    assert tokens_per_image(64) == 256 and tokens_per_image((32, 48)) == 96


def test_point_from_a_live_comparison_row():
    torch.manual_seed(0)
    model = VQModel(quantizer="vq", codebook_size=64, code_dim=4, hidden_dim=8, n_resblocks=1)
    images = validation_batch(n=8, size=32)
    counts = analysis.usage_counts(model, images)
    row = analysis.comparison_row("tiny", model, images=images, counts=counts, saved_metrics={})
    p = point_from_row(row, model.config, image_size=32)
    assert p.tokens == 64 and p.codebook_size == 64
    assert p.entropy == pytest.approx(entropy_bits(counts), rel=1e-9)
    assert p.bits_fixed == 64 * 6 and p.bits_entropy == pytest.approx(64 * entropy_bits(counts))
    assert p.psnr == pytest.approx(row["PSNR"]) and p.quantizer == "VQ" and p.variant == "code dim 4"
    assert "live (8 val images)" in p.source
    frame = rate_distortion_table([p])
    assert list(frame.columns) == list(RD_COLUMNS) and len(frame) == 1


def test_points_from_evaluated_runs(tmp_path):
    cfg = dict(quantizer="fsq", levels=[4, 4], hidden_dim=8, n_resblocks=1)
    for name, ppl in (("fsq-a", 4.0), ("fsq-b", 8.0)):
        ckpt = tmp_path / name / "checkpoints" / "step-00000010"
        VQModel(**cfg).save_pretrained(ckpt)
        (ckpt / "metrics.json").write_text(json.dumps(
            {"perplexity": ppl, "psnr": 20.0, "ssim": 0.5, "lpips": None, "codebook_size": 16, "image_size": 32,
             "num_images": 10}))
    VQModel(**cfg).save_pretrained(tmp_path / "not-evaluated" / "checkpoints" / "step-00000010")
    points = points_from_runs(tmp_path)
    assert [p.name for p in points] == ["fsq-a", "fsq-b"]
    assert [p.entropy for p in points] == pytest.approx([2.0, 3.0])
    assert points[0].bits_fixed == 64 * 4 and points[0].variant == "levels 4-4"
    assert "step 10 metrics.json" in points[0].source
    assert points_from_runs(tmp_path / "missing") == []
    with pytest.raises(ValueError, match="perplexity"):
        point_from_metrics("x", {"quantizer": "vq", "codebook_size": 8}, {"psnr": 1.0})


def test_points_from_the_cpu_sweep_table():
    points = points_from_sweep_rows(read_rows(REPO / "docs" / "cpu_sweep.json"), source="cpu_sweep.json")
    by_name = {p.name: p for p in points}
    configs = {p.stem for p in (REPO / "configs" / "cpu").glob("*.yaml") if not p.stem.startswith("default")}
    # One point per sweep row, named like its config: the study's 18 rows at least (rows added to
    # configs/cpu appear once the sweep is rerun).
    study = {"vq-512", "vq-2048", "vq-16384", "vq-d8-2048", "vq-d8-16384", "vq-l2-2048", "vq-l2-16384",
             "vq-entropy-2048", "vq-entropy-16384", "fsq-888", "fsq-8555", "fsq-88865", "simvq-512", "simvq-2048",
             "simvq-16384", "vq-ema-512", "vq-ema-2048", "vq-ema-16384"}
    assert study <= set(by_name) <= configs and len(by_name) == len(points)
    vq = by_name["vq-512"]
    assert (vq.quantizer, vq.variant, vq.codebook_size, vq.image_size, vq.tokens) == ("VQ", "plain", 512, 32, 64)
    # the numbers are the sweep's own (docs/cpu_sweep.json, written beside the markdown tables)
    saved = {r["name"]: r["metrics"] for r in json.loads((REPO / "docs" / "cpu_sweep.json").read_text())["rows"]}
    assert vq.entropy == pytest.approx(math.log2(saved["vq-512"]["perplexity"]))
    assert vq.psnr == pytest.approx(saved["vq-512"]["psnr"]) and round(vq.psnr, 2) == 17.03
    assert by_name["fsq-88865"].codebook_size == 15360 and by_name["fsq-88865"].quantizer == "FSQ"
    assert by_name["vq-entropy-2048"].variant == "entropy" and by_name["vq-ema-512"].variant == "EMA"
    assert by_name["vq-d8-2048"].variant == "code dim 8" and by_name["vq-l2-16384"].variant == "l2"
    assert vq.lpips is None and "cpu_sweep.json" in vq.source and "256 images" in vq.source
    assert by_name["vq-16384-restart"].variant == "dead-code restart 0.0078125"


def test_points_from_the_sweep_rows_file(tmp_path):
    """The rows the sweep writes beside its markdown, read by the trainer and passed in as data."""
    rows = [{"name": "vq-8", "config": {"quantizer": "vq", "codebook_size": 8, "code_dim": 64}, "image_size": 16,
             "metrics": {"perplexity": 4.0, "psnr": 12.5, "ssim": 0.25, "codebook_size": 8, "num_images": 3}}]
    (tmp_path / "sweep.json").write_text(json.dumps({"command": "x", "rows": rows}))
    [p] = points_from_sweep_rows(read_rows(tmp_path / "sweep.md"), source="sweep.json")
    assert (p.name, p.tokens, p.entropy, p.psnr) == ("vq-8", 16, 2.0, 12.5) and p.source.startswith("sweep.json")
    (tmp_path / "sweep.json").write_text("{}")
    with pytest.raises(ValueError, match="rerun"):
        read_rows(tmp_path / "sweep.md")


def test_sweep_rows_errors(tmp_path):
    with pytest.raises(ValueError, match="trainer sweep"):
        read_rows(tmp_path / "missing.md")
    (tmp_path / "bad.json").write_text('{"rows": [{"name": "x"}]}')
    with pytest.raises(ValueError, match="not a sweep's rows file"):
        read_rows(tmp_path / "bad.json")
