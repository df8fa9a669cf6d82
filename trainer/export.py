"""``python -m trainer export``: a checkpoint without its optimizer state (for demo checkpoints)."""
from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from vqexplore.errors import CheckpointError
from vqexplore.hub import CONFIG_NAME, METRICS_NAME, WEIGHTS_NAME, resolve

from .checkpoint import STATE_JSON
from .evaluate import training_info
from .runfacts import FACTS_NAME, write_card, write_facts

FILES = (CONFIG_NAME, WEIGHTS_NAME, METRICS_NAME)


def export_checkpoint(ckpt: str, to: str) -> Path:
    """Copy config.json, model.safetensors and metrics.json of ``ckpt`` into ``to``, with its
    training.json extended by the eval and export commands, and a model card made from them."""
    src = resolve(ckpt)
    if src.kind == "hub":
        raise CheckpointError(f"{ckpt} is a Hub repo; export takes a local checkpoint or run folder")
    dest = Path(to)
    if dest.resolve() == src.path.resolve():
        raise CheckpointError(f"--to {dest} is the checkpoint itself; choose another folder")
    if dest.exists() and any(dest.iterdir()) and not (dest / CONFIG_NAME).exists():
        raise CheckpointError(f"--to {dest} exists and is not a checkpoint folder; choose an empty or new folder")
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if (src.path / name).is_file():
            shutil.copy2(src.path / name, dest / name)
        else:
            (dest / name).unlink(missing_ok=True)  # a stale file of an earlier export
    (dest / STATE_JSON).unlink(missing_ok=True)
    facts = training_info(src.path)
    if facts:
        facts["name"] = dest.name  # an exported checkpoint is known by its folder (checkpoints/vq-512)
        # The commands after training, once each: how this very folder was made.
        commands = [c for c in facts.get("commands", [])
                    if not c.startswith(("python -m trainer eval ", "python -m trainer export "))]
        if (dest / METRICS_NAME).is_file():
            commands.append(f"python -m trainer eval --ckpt {shlex.quote(ckpt)}")
        commands.append(f"python -m trainer export --ckpt {shlex.quote(ckpt)} --to {shlex.quote(to)}")
        write_facts(dest, {**facts, "commands": commands})
    else:
        (dest / FACTS_NAME).unlink(missing_ok=True)
    write_card(dest)
    return dest
