"""A run SIGKILLed between two checkpoints and resumed ends with the same weights as one never
interrupted (CPU, fixed seed, one thread), and half-written checkpoints are never used."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers.trainer_runs import ROOT, env, write_config
from trainer import cli
from vqexplore.hub import list_checkpoints

STEPS = 40
# EMA codebook (buffers), the remedies' state (k-means done, usage EMA, restart counter), Adam
# state, the weight EMA, the lr schedule and mid-epoch data position all have to survive the kill.
SECTIONS = dict(model={"ema_update": True, "kmeans_init": True, "dead_code_threshold": 0.05},
                train={"steps": STEPS, "ckpt_every": 2, "keep_last": 2, "log_every": 2, "val_every": 10,
                       "lr_schedule": "cosine", "warmup_steps": 5, "grad_clip": 1.0, "ema_decay": 0.9})


def _weights(run: Path) -> dict[str, torch.Tensor]:
    """The final checkpoint's weights and its weight EMA's (prefixed ``ema/``), and the
    discriminator's and both optimizers' state (prefixed ``disc/``, ``state/``) when there is one."""
    step, folder = list_checkpoints(run)[-1]
    assert step == STEPS
    ema = {f"ema/{k}": v for k, v in load_file(str(folder / "ema" / "model.safetensors")).items()}
    extra = {}
    if (folder / "discriminator.safetensors").is_file():
        extra.update({f"disc/{k}": v for k, v in load_file(str(folder / "discriminator.safetensors")).items()})
        extra.update({f"state/{k}": v for k, v in load_file(str(folder / "trainer_state.safetensors")).items()
                      if k.startswith(("optimizer.", "disc_optimizer."))})
    return {**load_file(str(folder / "model.safetensors")), **ema, **extra}


def _start(cfg: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trainer", "--cfg", str(cfg), *extra], cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_latest_resumable_is_the_newest_checkpoint_with_trainer_state(tmp_path):
    """Fast, in process: what --resume picks among complete, weights-only and half-written folders."""
    from trainer import checkpoint as ckpt_io
    from vqexplore import VQModel

    run = tmp_path / "run"
    assert ckpt_io.latest_resumable(run) is None  # no folder at all
    model = VQModel(quantizer="vq", codebook_size=8, code_dim=4, hidden_dim=8, n_resblocks=1)
    both = (ckpt_io.STATE_TENSORS, ckpt_io.STATE_JSON)
    for step, files in ((2, both), (4, both), (6, (ckpt_io.STATE_JSON,)), (8, (ckpt_io.STATE_TENSORS,)), (10, ())):
        folder = run / "checkpoints" / f"step-{step:08d}"
        model.save_pretrained(folder)
        for name in files:
            (folder / name).write_text("{}")
    (run / "checkpoints" / ".tmp-step-00000012-1").mkdir()
    newest = run / "checkpoints" / "step-00000004"
    assert ckpt_io.latest_resumable(run) == newest
    assert ckpt_io.is_resumable(newest)
    assert not any(ckpt_io.is_resumable(run / "checkpoints" / f"step-{s:08d}") for s in (6, 8, 10))
    (newest / ckpt_io.STATE_JSON).unlink()
    assert ckpt_io.latest_resumable(run) == run / "checkpoints" / "step-00000002"


def _kill_after_checkpoint(proc: subprocess.Popen, run: Path, step: int) -> int:
    """Wait until checkpoint ``step`` exists, freeze the process at once (SIGSTOP), note the newest
    complete checkpoint, then SIGKILL it: the kill provably lands after that checkpoint and
    before the run's end. Returns the newest checkpoint's step."""
    target = run / "checkpoints" / f"step-{step:08d}"
    deadline = time.monotonic() + 120
    while not target.is_dir():
        assert proc.poll() is None, f"the run ended before checkpoint {step}: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"no checkpoint {step} after 120 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGSTOP)
    steps = [s for s, _ in list_checkpoints(run)]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert steps and step <= steps[-1] < STEPS, f"waited for checkpoint {step}, found {steps} at the kill"
    return steps[-1]


def test_sigkill_and_resume_gives_identical_weights(tmp_path):
    """Killed twice (after checkpoint 10, then after checkpoint 26 of the resumed run), resumed
    each time from the checkpoint that existed at the kill, it ends bit-exact with a run never
    interrupted (fixed seed, one thread)."""
    # The uninterrupted reference, in this process.
    ref_cfg = write_config(tmp_path / "ref.yaml", "ref", tmp_path / "runs", **SECTIONS)
    assert cli.main(["--cfg", str(ref_cfg)]) == 0
    reference = _weights(tmp_path / "runs" / "ref")

    cfg = write_config(tmp_path / "killed.yaml", "killed", tmp_path / "runs", **SECTIONS)
    run = tmp_path / "runs" / "killed"
    first = _kill_after_checkpoint(_start(cfg), run, 10)
    second_run = _start(cfg, "--resume")
    second = _kill_after_checkpoint(second_run, run, 26)
    assert f"from step-{first:08d}" in second_run.stderr.read()
    # A leftover temporary folder (as a kill during a save leaves) must be ignored and removed.
    junk = run / "checkpoints" / ".tmp-step-00000099-12345"
    junk.mkdir()
    (junk / "config.json").write_text("{")
    final = _start(cfg, "--resume")
    out, err = final.communicate(timeout=180)
    assert final.returncode == 0, err
    assert f"from step-{second:08d}" in err, err[-2000:]
    assert not junk.exists()

    print(f"resume test: killed after checkpoints {first} and {second}")
    resumed = _weights(run)
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), f"{name} differs (killed after {first} and {second})"

    # metrics.jsonl holds each step once, in order, despite the kills.
    from vqexplore.hub import read_run_metrics

    steps = [r["step"] for r in read_run_metrics(run) if r["split"] == "train"]
    assert steps == list(range(2, STEPS + 1, 2)), steps


# The VQGAN stage: the discriminator (weights, BatchNorm statistics), its Adam state and the
# adversarial step (from step 6, with taming's adaptive weight) have to survive the kill too; the
# kill lands after checkpoint 10 (4 adversarial steps in), on 2 CPU threads.
GAN_SECTIONS = {**SECTIONS, "train": {**SECTIONS["train"], "threads": 2},
                "loss": {"adv_weight": 0.5, "disc_start": 6, "adaptive_weight": True,
                         "disc_width": 8, "disc_layers": 2, "disc_loss": "hinge"}}


@pytest.mark.timeout(1800)  # three trainer runs; minutes each on a loaded 2-core machine
def test_sigkill_and_resume_with_the_discriminator_active_is_bit_exact(tmp_path):
    ref_cfg = write_config(tmp_path / "ref.yaml", "ref", tmp_path / "runs", **GAN_SECTIONS)
    assert cli.main(["--cfg", str(ref_cfg)]) == 0
    reference = _weights(tmp_path / "runs" / "ref")
    assert any(k.startswith("disc/") for k in reference) and any(k.startswith("state/disc_") for k in reference)

    cfg = write_config(tmp_path / "killed.yaml", "killed", tmp_path / "runs", **GAN_SECTIONS)
    run = tmp_path / "runs" / "killed"
    first = _kill_after_checkpoint(_start(cfg), run, 10)
    final = _start(cfg, "--resume")
    out, err = final.communicate(timeout=600)
    assert final.returncode == 0, err
    assert f"from step-{first:08d}" in err, err[-2000:]
    resumed = _weights(run)
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), f"{name} differs (killed after {first})"
