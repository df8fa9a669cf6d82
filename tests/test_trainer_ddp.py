"""DDP on CPU: ``torchrun --nproc-per-node 2`` (gloo) trains a few steps; both ranks end with
identical weights (including the EMA codebook, whose statistics are all-reduced) and only one
run folder is written."""
from __future__ import annotations

import re
import subprocess
import sys

from safetensors.torch import load_file

from helpers.ddp_train import weights_sha256
from helpers.trainer_runs import ROOT, env, write_config
from vqexplore.hub import list_checkpoints


def test_torchrun_two_processes(tmp_path):
    out_dir = tmp_path / "runs"
    cfg = write_config(tmp_path / "ddp.yaml", "ddp", out_dir, model={"ema_update": True},
                       train={"steps": 6, "ckpt_every": 3, "val_every": 3, "log_every": 1})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "tests" / "helpers" / "ddp_train.py"), str(cfg)]
    r = subprocess.run(cmd, cwd=ROOT, env=env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    hashes = dict(re.findall(r"rank (\d) weights sha256 ([0-9a-f]{64})", r.stdout))
    assert set(hashes) == {"0", "1"}, r.stdout
    assert hashes["0"] == hashes["1"]

    # One run folder, written by rank 0; its final checkpoint is the weights both ranks hold.
    assert [p.name for p in out_dir.iterdir()] == ["ddp"]
    assert [s for s, _ in list_checkpoints(out_dir / "ddp")] == [3, 6]
    import vqexplore

    model = vqexplore.load(out_dir / "ddp")
    assert weights_sha256(model) == hashes["0"]
    state = load_file(str(list_checkpoints(out_dir / "ddp")[-1][1] / "model.safetensors"))
    assert "quantizer.ema_cluster_size" in state
    # Batch 8 split over 2 ranks: the logged images/s counts the global batch; one row per step.
    from vqexplore.hub import read_run_metrics

    rows = [r for r in read_run_metrics(out_dir / "ddp") if r["split"] == "train"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]


def test_torchrun_two_processes_with_the_discriminator(tmp_path):
    """The VQGAN stage under DDP: the discriminator is wrapped too, so after adversarial steps
    (with taming's adaptive weight, which each rank computes from its own batch, gradient
    clipping and the weight EMA) both ranks hold identical generator and discriminator weights."""
    out_dir = tmp_path / "runs"
    cfg = write_config(tmp_path / "gan.yaml", "gan", out_dir,
                       train={"steps": 6, "ckpt_every": 6, "val_every": 0, "log_every": 1, "grad_clip": 1.0,
                              "ema_decay": 0.9},
                       loss={"adv_weight": 0.5, "disc_start": 2, "adaptive_weight": True, "disc_width": 8,
                             "disc_layers": 2})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "tests" / "helpers" / "ddp_train.py"), str(cfg)]
    r = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    weights = dict(re.findall(r"rank (\d) weights sha256 ([0-9a-f]{64})", r.stdout))
    disc = dict(re.findall(r"rank (\d) discriminator sha256 ([0-9a-f]{64})", r.stdout))
    assert set(weights) == set(disc) == {"0", "1"}, r.stdout
    assert weights["0"] == weights["1"] and disc["0"] == disc["1"]

    from vqexplore.hub import read_run_metrics

    rows = [r for r in read_run_metrics(out_dir / "gan") if r["split"] == "train"]
    assert [("disc_loss" in r) for r in rows] == [False, False, True, True, True, True]
    # The discriminator rank 0 saved is the one both ranks hold.
    from helpers.ddp_train import parameters_sha256
    from vqexplore.gan import PatchDiscriminator

    saved = PatchDiscriminator(width=8, n_layers=2)
    saved.load_state_dict(load_file(str(list_checkpoints(out_dir / "gan")[-1][1] / "discriminator.safetensors")))
    assert parameters_sha256(saved) == disc["0"]
