"""The training recipe: learning-rate warm-up and cosine decay, gradient clipping and the EMA of
the weights (saved as step-N/ema/, loadable like any checkpoint)."""
from __future__ import annotations

import math

import pytest
import torch

import vqexplore
import vqexplore.hub  # a submodule: the package imports its names lazily, not its submodules
from helpers.trainer_runs import run_trainer, write_config
from trainer.recipe import WeightEMA, learning_rate


def test_learning_rate_schedule():
    lr = lambda s, **kw: learning_rate(s, lr=1.0, steps=110, **kw)  # noqa: E731
    assert [lr(s) for s in (0, 50, 109)] == [1.0, 1.0, 1.0]
    assert [lr(s, warmup_steps=10) for s in (0, 4, 9, 10, 109)] == [0.1, 0.5, 1.0, 1.0, 1.0]
    cos = [lr(s, schedule="cosine", warmup_steps=10, min_lr=0.1) for s in range(110)]
    assert cos[9] == 1.0 and cos[10] == 1.0 and math.isclose(cos[109], 0.1)
    assert math.isclose(cos[10 + 99 // 2], 0.55, abs_tol=0.01)  # halfway down
    assert all(a >= b for a, b in zip(cos[10:], cos[11:]))     # monotone after the warm-up


def test_weight_ema_averages_parameters_and_copies_buffers():
    model = vqexplore.VQModel(codebook_size=16, code_dim=4, hidden_dim=8, ema_update=True)
    ema = WeightEMA(model, decay=0.75)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model.quantizer.embedding.add_(2.0)  # an EMA-k-means codebook is a buffer
    ema.update(model)
    for p_ema, p0 in zip(ema.model.parameters(), before):
        assert torch.allclose(p_ema, p0 + 0.25)
    assert torch.equal(ema.model.quantizer.embedding, model.quantizer.embedding)
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_training_with_the_recipe_saves_a_loadable_weight_ema(tmp_path):
    cfg = write_config(tmp_path / "r.yaml", "r", tmp_path / "runs",
                       train={"steps": 6, "lr_schedule": "cosine", "warmup_steps": 2, "grad_clip": 0.5,
                              "ema_decay": 0.5, "ckpt_every": 6, "val_every": 6, "log_every": 1})
    r = run_trainer("--cfg", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "weight EMA" in r.stderr
    step_dir = tmp_path / "runs" / "r" / "checkpoints" / "step-00000006"
    live, ema = vqexplore.load(step_dir), vqexplore.load(step_dir / "ema")
    assert live.config == ema.config
    assert any(not torch.equal(a, b) for a, b in zip(live.parameters(), ema.parameters()))
    rows = [r for r in vqexplore.hub.read_run_metrics(tmp_path / "runs" / "r")]
    lrs = [r["lr"] for r in rows if r["split"] == "train"]
    assert lrs[0] == pytest.approx(1e-3 / 2) and lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert {r["split"] for r in rows} == {"train", "val", "val_ema"}


@pytest.mark.parametrize("key, value, words", [
    ("lr_schedule", "linear", "constant or cosine"),
    ("warmup_steps", -1, ">= 0"),
    ("min_lr", 1.0, "min_lr"),
    ("grad_clip", -0.5, ">= 0"),
    ("ema_decay", 1.0, "[0, 1)"),
])
def test_recipe_keys_are_validated(tmp_path, key, value, words):
    cfg = write_config(tmp_path / "bad.yaml", "bad", tmp_path / "runs", train={key: value})
    r = run_trainer("--cfg", str(cfg))
    assert r.returncode == 2, r.stderr
    assert f"train.{key}" in r.stderr and words in r.stderr and "Traceback" not in r.stderr


def test_export_chooses_the_live_weights_or_their_ema(tmp_path):
    cfg = write_config(tmp_path / "e.yaml", "e", tmp_path / "runs",
                       train={"steps": 4, "ema_decay": 0.5, "ckpt_every": 4, "val_every": 4})
    assert run_trainer("--cfg", str(cfg)).returncode == 0
    run = tmp_path / "runs" / "e"
    rows = {r["split"]: r for r in vqexplore.hub.read_run_metrics(run) if r["split"] in ("val", "val_ema")}
    expected_best = "ema" if rows["val_ema"]["psnr"] > rows["val"]["psnr"] else "live"
    step_dir = run / "checkpoints" / "step-00000004"
    for choice, source in (("live", step_dir), ("ema", step_dir / "ema"), ("best", None)):
        out = tmp_path / f"out-{choice}"
        # the dashboard's views (a UMAP and the default protocol) only where they are checked: the EMA's
        views = [] if choice == "ema" else ["--no-views"]
        r = run_trainer("export", "--ckpt", str(run), "--to", str(out), "--weights", choice, *views)
        assert r.returncode == 0, r.stderr
        picked = expected_best if choice == "best" else choice
        assert f"exported the {picked} weights" in r.stdout
        source = source or (step_dir / "ema" if picked == "ema" else step_dir)
        assert (out / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
        if choice == "ema":  # stored for the exported (EMA) weights, not the live ones beside them
            from vqexplore.protocol import stored_evaluation

            assert stored_evaluation(out) is not None and (out / "projection.npz").is_file()
    # A run without a weight EMA: --weights ema is a clear error, best falls back to live.
    cfg = write_config(tmp_path / "n.yaml", "n", tmp_path / "runs", train={"steps": 2, "ckpt_every": 2})
    assert run_trainer("--cfg", str(cfg)).returncode == 0
    r = run_trainer("export", "--ckpt", str(tmp_path / "runs" / "n"), "--to", str(tmp_path / "x"), "--weights", "ema")
    assert r.returncode != 0 and "no weight EMA" in r.stderr and "Traceback" not in r.stderr


def test_device_crops_are_a_pure_function_of_seed_step_and_rank(tmp_path):
    """data.device_crops cuts the photo corpus on the training device (here the CPU): the batch of
    a step does not depend on where the iterator started, so a resumed run sees the same data."""
    from trainer.train import _device_crops
    from vqexplore.data.corpus import PhotoStack, photo_arrays

    stack = PhotoStack(photo_arrays("train")[:3], "cpu")
    from_zero = _device_crops(stack, 4, 16, 0, 0, 0)
    batches = [next(from_zero) for _ in range(3)]
    resumed = next(_device_crops(stack, 4, 16, 0, 0, 2))
    assert torch.equal(batches[2], resumed)
    assert not torch.equal(batches[2], next(_device_crops(stack, 4, 16, 0, 1, 2)))  # another rank
    assert batches[0].shape == (4, 3, 16, 16) and batches[0].min() >= -1 and batches[0].max() <= 1
    cfg = write_config(tmp_path / "d.yaml", "d", tmp_path / "runs",
                       data={"train": "photos", "val": "photos", "device_crops": True},
                       train={"steps": 2, "ckpt_every": 2, "val_every": 2})
    r = run_trainer("--cfg", str(cfg))
    assert r.returncode == 0, r.stderr
    bad = write_config(tmp_path / "b.yaml", "b", tmp_path / "runs", data={"device_crops": True})
    r = run_trainer("--cfg", str(bad))
    assert r.returncode != 0 and "data.device_crops" in r.stderr and "Traceback" not in r.stderr
