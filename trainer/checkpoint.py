"""Checkpoints that survive SIGKILL: written atomically, pickle-free, resumable.

``<run>/checkpoints/step-XXXXXXXX/`` holds

- ``config.json``, ``model.safetensors``, ``README.md``: the ``save_pretrained`` format that
  ``vqexplore.load`` reads (weights and buffers, e.g. EMA codebook statistics);
- ``trainer_state.safetensors``: the optimizer's tensors (Adam moments and step counts) and the
  torch RNG states (and the discriminator optimizer's, prefixed ``disc_optimizer.``);
- ``discriminator.safetensors``: the VQGAN stage's discriminator (weights and BatchNorm
  statistics), only in runs that train one; never exported (``vqexplore.load`` reads the
  tokenizer only);
- ``trainer_state.json``: everything else (step, data position, optimizer param_groups, elapsed
  time, the command that made the run).

A checkpoint is first written into ``.tmp-step-XXXXXXXX-<pid>/`` beside the others (a name
``vqexplore.hub.list_checkpoints`` never matches), every file and the folder are fsynced, and the
folder is renamed into place: a reader sees either the whole checkpoint or none of it. Old
checkpoints are renamed to ``.trash-...`` before they are deleted, for the same reason.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vqexplore.errors import CheckpointError
from vqexplore.utils import fsync_dir

from . import runfacts
from vqexplore.hub import CHECKPOINTS_DIR, EMA_DIR, WEIGHTS_NAME, checkpoint_dirname, list_checkpoints
from vqexplore.runlayout import STATE

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = STATE
DISC_WEIGHTS = "discriminator.safetensors"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------------------------
# Optimizer and RNG state <-> (tensors, JSON), without pickle
# ---------------------------------------------------------------------------------------------

def optimizer_to_flat(optimizer: torch.optim.Optimizer,
                      prefix: str = "optimizer") -> tuple[dict[str, torch.Tensor], dict]:
    """optimizer.state_dict() split into safetensors-able tensors (named ``prefix.<id>.<key>``)
    and JSON-able values."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict,
                        prefix: str = "optimizer") -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if not name.startswith(prefix + "."):
            continue
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta.get("scalars", {}).items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ---------------------------------------------------------------------------------------------
# Save / find / load
# ---------------------------------------------------------------------------------------------

def save_checkpoint(run_dir: Path, step: int, model, optimizer, state: dict, *,
                    run_facts: dict | None = None, keep_last: int | None = None, ema_model=None,
                    disc=None, disc_optimizer=None) -> Path:
    """Write ``<run>/checkpoints/step-N/`` atomically and keep the newest ``keep_last``.

    ``run_facts`` (``runfacts.facts``) go to ``training.json``; the model card is made from them.

    ``ema_model`` (an EMA of the weights) is saved inside it as ``step-N/ema/``, itself a
    checkpoint folder that ``vqexplore.load`` opens like any other. ``disc`` and ``disc_optimizer``
    (the VQGAN stage's discriminator) go to ``discriminator.safetensors`` and the trainer state."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_dirname(step)
    tmp = root / f"{TMP_PREFIX}{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        _write_checkpoint(tmp, model, optimizer, state, step, run_facts, ema_model, disc, disc_optimizer)
    except BaseException as e:  # disk full, read-only, interrupted: leave no half-written folder
        shutil.rmtree(tmp, ignore_errors=True)
        # safetensors reports a failed write as its own error type: make it the OSError it is
        code = re.search(r"os error (\d+)", str(e)) if not isinstance(e, OSError) else None
        if code:
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(final)) from None
        raise
    if final.exists():  # only when the very same step is saved again; move the old one aside
        _remove(final)
    os.rename(tmp, final)
    fsync_dir(root)
    if keep_last:
        for _, old in list_checkpoints(run_dir)[:-keep_last]:
            _remove(old)
    return final


def _write_checkpoint(tmp: Path, model, optimizer, state: dict, step: int, run_facts: dict | None,
                      ema_model, disc=None, disc_optimizer=None) -> None:
    card = runfacts.card_kwargs(run_facts or {})
    model.save_pretrained(tmp, model_card_kwargs=card)
    if run_facts:
        runfacts.write_facts(tmp, run_facts)
    if ema_model is not None:
        ema_model.save_pretrained(tmp / EMA_DIR, model_card_kwargs=card)
    tensors, opt_meta = optimizer_to_flat(optimizer)
    tensors.update(rng_tensors())
    meta = {**state, "step": int(step), "optimizer": opt_meta, "saved_at": time.time()}
    if disc is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in disc.state_dict().items()}, str(tmp / DISC_WEIGHTS))
        disc_tensors, meta["disc_optimizer"] = optimizer_to_flat(disc_optimizer, "disc_optimizer")
        tensors.update(disc_tensors)
    save_file(tensors, str(tmp / STATE_TENSORS))
    (tmp / STATE_JSON).write_text(json.dumps(meta, indent=1))
    for f in tmp.rglob("*"):
        if f.is_file():
            _fsync_file(f)
    fsync_dir(tmp)


def _remove(path: Path) -> None:
    """Delete a checkpoint folder without ever leaving a half-deleted ``step-N``."""
    trash = path.with_name(f"{TRASH_PREFIX}{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def clean_temporaries(run_dir: Path) -> list[Path]:
    """Remove half-written ``.tmp-*`` / ``.trash-*`` folders left by a killed run."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    removed = []
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
                removed.append(child)
    return removed


def is_resumable(ckpt: Path) -> bool:
    return (ckpt / STATE_TENSORS).is_file() and (ckpt / STATE_JSON).is_file()


def latest_resumable(run_dir: Path) -> Path | None:
    """The newest complete checkpoint that holds trainer state, or None."""
    for _, path in reversed(list_checkpoints(run_dir)):
        if is_resumable(path):
            return path
    return None


def read_training_state(ckpt: Path) -> dict:
    """``trainer_state.json`` of a resumable checkpoint (step, data position, the run's config)."""
    path = Path(ckpt) / STATE_JSON
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} cannot be read ({e}); delete {ckpt} to resume from the one before") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a JSON object; delete {ckpt} to resume from the one before")
    return meta


def load_training_state(ckpt: Path, model, optimizer, ema_model=None, disc=None, disc_optimizer=None) -> dict:
    """Load weights, optimizer and RNG from a checkpoint into ``model``/``optimizer`` (and the
    weight EMA into ``ema_model``: the checkpoint's ``ema/`` folder, or the weights themselves when
    the run had no EMA before; the discriminator into ``disc``/``disc_optimizer``); returns the
    JSON state (step, data position, ...)."""
    from vqexplore.hub import check_safetensors

    ckpt = Path(ckpt)
    try:
        check_safetensors(ckpt / WEIGHTS_NAME)
        check_safetensors(ckpt / STATE_TENSORS)
        meta = json.loads((ckpt / STATE_JSON).read_text())
        weights = load_file(str(ckpt / WEIGHTS_NAME))
        tensors = load_file(str(ckpt / STATE_TENSORS))
    except (OSError, json.JSONDecodeError, ValueError) as e:
        raise CheckpointError(f"{ckpt} cannot be resumed ({e}); delete it to resume from the one before") from None
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{ckpt / WEIGHTS_NAME} does not match the configured model "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]}); resume with the run's own config")
    if ema_model is not None:
        ema_file = ckpt / EMA_DIR / WEIGHTS_NAME
        try:
            ema_model.load_state_dict(load_file(str(ema_file)) if ema_file.is_file() else weights)
        except (OSError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{ema_file} cannot be resumed ({e}); delete the checkpoint to resume "
                                  f"from the one before") from None
    optimizer_from_flat(optimizer, tensors, meta["optimizer"])
    if disc is not None:
        disc_file = ckpt / DISC_WEIGHTS
        if not disc_file.is_file() or "disc_optimizer" not in meta:
            raise CheckpointError(f"{ckpt} holds no discriminator ({DISC_WEIGHTS}) although the run trains one; "
                                  f"resume with the run's own config (loss.adv_weight)")
        try:
            check_safetensors(disc_file)
            disc.load_state_dict(load_file(str(disc_file)))
            optimizer_from_flat(disc_optimizer, tensors, meta["disc_optimizer"], "disc_optimizer")
        except (OSError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{disc_file} cannot be resumed ({e}); delete the checkpoint to resume "
                                  f"from the one before") from None
    restore_rng(tensors)
    return meta
