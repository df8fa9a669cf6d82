"""``python -m trainer export``: a checkpoint without its optimizer state (for demo checkpoints)."""
from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

from vqexplore.errors import CheckpointError
from vqexplore.hub import CONFIG_NAME, METRICS_NAME, WEIGHTS_NAME, resolve

from .checkpoint import STATE_JSON

FILES = (CONFIG_NAME, WEIGHTS_NAME, "README.md", METRICS_NAME)


def export_checkpoint(ckpt: str, to: str) -> Path:
    """Copy config.json, model.safetensors, README.md (the card, with the command that made the
    checkpoint) and metrics.json of ``ckpt`` into ``to``."""
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
    _add_steps_to_card(dest / "README.md", ckpt, to, has_metrics=(dest / METRICS_NAME).is_file())
    return dest


def _add_steps_to_card(card: Path, ckpt: str, to: str, has_metrics: bool) -> None:
    """Complete the card's "How it was made" block with the eval and export commands."""
    if not card.is_file():
        return
    text = card.read_text(encoding="utf-8")
    m = re.search(r"(## How it was made\s*```\n)(.*?)(\n```)", text, re.S)
    if not m:
        return
    lines = [line for line in m.group(2).splitlines()
             if not line.startswith(("python -m trainer eval ", "python -m trainer export "))]
    if has_metrics:
        lines.append(f"python -m trainer eval --ckpt {shlex.quote(ckpt)}")
    lines.append(f"python -m trainer export --ckpt {shlex.quote(ckpt)} --to {shlex.quote(to)}")
    text = text[:m.start(2)] + "\n".join(lines) + text[m.end(2):]
    card.write_text(text, encoding="utf-8")
