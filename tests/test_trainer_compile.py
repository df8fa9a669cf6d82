"""``train.compile=true``: the step runs a ``torch.compile``d model (on CPU through gcc), while
checkpoints, the weight EMA, resume and DDP behave as without it: a compiled run's checkpoint is an
ordinary checkpoint (no ``_orig_mod.`` names), it resumes into an uncompiled run and back, a
compiled run SIGKILLed and resumed ends bit-exact with one never interrupted, the weight EMA is
averaged and saved every step, the VQGAN stage's discriminator is compiled and saved the same way,
and two gloo processes end with identical weights."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vqexplore
from helpers.trainer_runs import ROOT, env, run_trainer, write_config
from test_trainer_resume import STEPS, _kill_after_checkpoint, _start, _weights
from trainer import cli
from vqexplore.hub import list_checkpoints, read_run_metrics

COMPILE = {"compile": True}


def _saved_names(folder: Path) -> set[str]:
    names = set(load_file(str(folder / "model.safetensors")))
    for extra in ("ema/model.safetensors", "discriminator.safetensors", "trainer_state.safetensors"):
        if (folder / extra).is_file():
            names |= set(load_file(str(folder / extra)))
    return names


def _train(cfg: Path, *extra: str) -> str:
    """Run the trainer in a child process (a fresh compile, as a user's run); return its stderr."""
    r = run_trainer("--cfg", str(cfg), *extra, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stderr


def test_compiled_checkpoints_load_and_resume_into_uncompiled_runs_and_back(tmp_path):
    """A compiled run's checkpoints load with ``vqexplore.load`` (strictly: every name as an
    uncompiled run writes it), resume with ``train.compile=false``, and an uncompiled run resumes
    with ``train.compile=true``; both continue from the checkpoint's step to the end."""
    runs = tmp_path / "runs"
    train = {"steps": 3, "ckpt_every": 3, "val_every": 0, "log_every": 1, "ema_decay": 0.9}
    for name, first, then in (("c2e", True, False), ("e2c", False, True)):
        cfg = write_config(tmp_path / f"{name}.yaml", name, runs, train={**train, "compile": first})
        _train(cfg)
        err = _train(cfg, "--resume", "train.steps=6", f"train.compile={str(then).lower()}")
        assert "from step-00000003 (step 3)" in err, err[-2000:]
        run = runs / name
        assert [s for s, _ in list_checkpoints(run)] == [3, 6]
        for _, folder in list_checkpoints(run):
            names = _saved_names(folder)
            assert not [n for n in names if "_orig_mod" in n or n.startswith("module.")], sorted(names)[:5]
            vqexplore.load(folder)  # strict: every weight name as the model has it
            vqexplore.load(folder / "ema")
        assert [r["step"] for r in read_run_metrics(run) if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]


def test_compiled_run_keeps_the_weight_ema_of_the_trained_weights(tmp_path):
    """Checkpointed after every step, a compiled run's saved weight EMA follows
    ema_k = 0.9 ema_(k-1) + 0.1 w_k from the saved weights w_k: it averages the weights the
    compiled step trains, and is saved. The VQGAN stage is on from step 2, so the discriminator
    (compiled too, and run by the generator's loss with taming's adaptive weight) is saved and
    trained through the compiled module."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list as compiled_entries

    from vqexplore.gan import PatchDiscriminator
    from vqexplore.models import VQModel

    runs = tmp_path / "runs"
    cfg = write_config(tmp_path / "ema.yaml", "ema", runs,
                       train={"steps": 4, "ckpt_every": 1, "keep_last": 4, "val_every": 0, "log_every": 1,
                              "ema_decay": 0.9, "compile": True},
                       loss={"adv_weight": 0.5, "disc_start": 2, "adaptive_weight": True, "disc_width": 8,
                             "disc_layers": 2})
    torch._dynamo.reset()
    try:
        assert cli.main(["--cfg", str(cfg)]) == 0
        # The step ran compiled code: the model's and the discriminator's forwards were compiled.
        assert compiled_entries(VQModel.forward.__code__) and compiled_entries(PatchDiscriminator.forward.__code__)
    finally:
        torch._dynamo.reset()
    ckpts = list_checkpoints(runs / "ema")
    assert [s for s, _ in ckpts] == [1, 2, 3, 4]
    weights = [load_file(str(f / "model.safetensors")) for _, f in ckpts]
    emas = [load_file(str(f / "ema" / "model.safetensors")) for _, f in ckpts]
    trained = [n for n in weights[0] if not torch.equal(weights[0][n], weights[-1][n])]
    assert trained and "encoder.net.0.weight" in trained
    for k in range(1, 4):
        for name in trained:
            expected = torch.lerp(emas[k - 1][name], weights[k][name], 0.1)
            torch.testing.assert_close(emas[k][name], expected, rtol=1e-5, atol=1e-7, msg=f"{name} at step {k + 1}")
    discs = [load_file(str(f / "discriminator.safetensors")) for _, f in ckpts]
    assert not [n for n in discs[0] if "_orig_mod" in n or n.startswith("module.")]
    assert torch.equal(discs[0]["main.0.weight"], discs[1]["main.0.weight"])  # before disc_start: untouched
    assert not torch.equal(discs[1]["main.0.weight"], discs[3]["main.0.weight"])  # trained from step 3 on
    rows = [r for r in read_run_metrics(runs / "ema") if r["split"] == "train"]
    assert [("disc_loss" in r, "adaptive_weight" in r) for r in rows] == [(False, False), (False, False),
                                                                         (True, True), (True, True)]


def test_compiled_run_sigkilled_and_resumed_is_bit_exact(tmp_path):
    """With ``train.compile=true`` (EMA codebook, k-means init and dead-code restarts, whose
    data-dependent branches break the compiled graph), a run SIGKILLed after checkpoint 10 and
    resumed ends with the same weights, weight EMA and Adam state as one never interrupted."""
    from test_trainer_resume import SECTIONS

    sections = {**SECTIONS, "train": {**SECTIONS["train"], **COMPILE}}
    ref_cfg = write_config(tmp_path / "ref.yaml", "ref", tmp_path / "runs", **sections)
    _train(ref_cfg)
    reference = _weights(tmp_path / "runs" / "ref")

    cfg = write_config(tmp_path / "killed.yaml", "killed", tmp_path / "runs", **sections)
    run = tmp_path / "runs" / "killed"
    first = _kill_after_checkpoint(_start(cfg), run, 10)
    final = _start(cfg, "--resume")
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err[-3000:]
    assert f"from step-{first:08d}" in err, err[-2000:]
    resumed = _weights(run)
    assert list_checkpoints(run)[-1][0] == STEPS
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), f"{name} differs (killed after {first})"


@pytest.mark.timeout(600)
def test_torchrun_two_processes_compiled(tmp_path):
    """DDP then compile, two gloo processes: both ranks end with the same weights, which are the
    ones rank 0 saved."""
    from helpers.ddp_train import weights_sha256

    out_dir = tmp_path / "runs"
    cfg = write_config(tmp_path / "ddp.yaml", "ddp", out_dir, model={"ema_update": True},
                       train={"steps": 4, "ckpt_every": 4, "val_every": 0, "log_every": 1, **COMPILE})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "tests" / "helpers" / "ddp_train.py"), str(cfg)]
    r = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=500)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    hashes = dict(re.findall(r"rank (\d) weights sha256 ([0-9a-f]{64})", r.stdout))
    assert set(hashes) == {"0", "1"} and hashes["0"] == hashes["1"], r.stdout
    assert weights_sha256(vqexplore.load(out_dir / "ddp")) == hashes["0"]
