"""A run SIGKILLed at random moments and resumed ends with the same weights as one never
interrupted (CPU, fixed seed, one thread), and half-written checkpoints are never used."""
from __future__ import annotations

import os
import random
import shutil
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
    discriminator's and every optimizer's state (prefixed ``disc/``, ``state/``) when there."""
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


def _kill_during_training(proc: subprocess.Popen, run: Path, rng: random.Random, log: list,
                          max_delay: float, min_checkpoint: int = 0) -> bool:
    """Wait until the process is training (metrics.jsonl has grown) and has saved its checkpoint
    at step ``min_checkpoint`` (when > 0), then SIGKILL it after a random delay in [0, max_delay]."""
    metrics = run / "metrics.jsonl"
    size0 = metrics.stat().st_size if metrics.exists() else 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        saved = not min_checkpoint or any(s >= min_checkpoint for s, _ in list_checkpoints(run))
        if metrics.exists() and metrics.stat().st_size > size0 and saved:
            break
        time.sleep(0.02)
    delay = rng.uniform(0.0, max_delay)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    steps = [s for s, _ in list_checkpoints(run)]
    finished = bool(steps) and steps[-1] == STEPS  # the kill came too late to test anything
    log.append((delay, steps, "too late" if finished else "killed mid-run"))
    return not finished


def test_sigkill_and_resume_gives_identical_weights(tmp_path):
    _kill_resume_and_compare(tmp_path, SECTIONS)


# The VQGAN stage: the discriminator (weights, BatchNorm statistics), its Adam state and the
# adversarial step (from step 6, with taming's adaptive weight) have to survive the kill too; the
# kill comes after the checkpoint at step 10 (4 adversarial steps in), on 2 CPU threads.
GAN_SECTIONS = {**SECTIONS, "train": {**SECTIONS["train"], "threads": 2},
                "loss": {"adv_weight": 0.5, "disc_start": 6, "adaptive_weight": True,
                         "disc_width": 8, "disc_layers": 2, "disc_loss": "hinge"}}


@pytest.mark.timeout(1800)  # four trainer processes; minutes each on a loaded 2-core machine
def test_sigkill_and_resume_with_the_discriminator_active_is_bit_exact(tmp_path):
    _kill_resume_and_compare(tmp_path, GAN_SECTIONS, min_checkpoint=10)


def _kill_resume_and_compare(tmp_path, sections: dict, min_checkpoint: int = 0):
    """An uninterrupted run, then the same run SIGKILLed (after its checkpoint at step
    ``min_checkpoint`` at the earliest) and resumed: the same final weights and trainer state."""
    seed = int(os.environ.get("TEST_RESUME_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)

    # The uninterrupted reference, in this process.
    ref_cfg = write_config(tmp_path / "ref.yaml", "ref", tmp_path / "runs", **sections)
    t0 = time.monotonic()
    assert cli.main(["--cfg", str(ref_cfg)]) == 0
    train_seconds = time.monotonic() - t0
    reference = _weights(tmp_path / "runs" / "ref")

    # The same run, SIGKILLed at a random moment of its training, then resumed.
    cfg = write_config(tmp_path / "killed.yaml", "killed", tmp_path / "runs", **sections)
    run = tmp_path / "runs" / "killed"
    kills: list = []
    # Anywhere in the first half of the time that the reference run took (shorter if
    # this process happens to train faster and ends before the kill).
    max_delay = 0.5 * train_seconds
    for _ in range(3):
        if _kill_during_training(_start(cfg), run, rng, kills, max_delay=max_delay, min_checkpoint=min_checkpoint):
            break
        shutil.rmtree(run)
        max_delay /= 3
    else:
        raise AssertionError(f"could not kill the run before it ended: {kills}")
    # A leftover temporary folder (as a kill during a save leaves) must be ignored and removed.
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    junk = run / "checkpoints" / ".tmp-step-00000099-12345"
    junk.mkdir()
    (junk / "config.json").write_text("{")
    final = _start(cfg, "--resume")
    out, err = final.communicate(timeout=180)
    assert final.returncode == 0, f"seed {seed}, kills {kills}\n{err}"
    assert not junk.exists()

    print(f"resume test: seed {seed}, kills (delay s, checkpoints left) {kills}")
    resumed = _weights(run)
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), f"{name} differs (seed {seed}, kills {kills})"

    # metrics.jsonl holds each step once, in order, despite the kills.
    from vqexplore.hub import read_run_metrics

    steps = [r["step"] for r in read_run_metrics(run) if r["split"] == "train"]
    assert steps == list(range(2, STEPS + 1, 2)), steps
