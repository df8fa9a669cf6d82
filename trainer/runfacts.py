"""How a checkpoint was made, kept as JSON beside its weights (``training.json``), and the model
card generated from it.

``training.json`` holds ``name`` (the run), ``data`` (the training data in words), ``step`` and
``commands`` (the training command, then the ``eval`` / ``export`` commands that followed). The
trainer writes it with every checkpoint, ``eval`` and ``export`` extend it, and the model card
(README.md) is always generated from it, ``config.json`` and ``metrics.json``: a card is output,
never read back.
"""
from __future__ import annotations

import json
from pathlib import Path

from vqexplore.errors import CheckpointError, VQExploreError
from vqexplore.hub import CONFIG_NAME, METRICS_NAME, model_card, read_config, read_metrics
from vqexplore.runlayout import FACTS as FACTS_NAME
from vqexplore.runlayout import RunLayout
from vqexplore.utils import write_atomic


def run_config(run_dir: Path | None):
    """The run's config (its config.yaml through the trainer's one reader, validated: a
    ``trainer.config.Config``) when a checkpoint belongs to a run folder; else, or when the file
    is unreadable or no longer valid, the defaults (``Config()``)."""
    from .config import Config, read_run_config

    if run_dir is None or not RunLayout(run_dir).config.is_file():
        return Config()
    try:
        return read_run_config(RunLayout(run_dir).config)
    except VQExploreError:
        return Config()


def default_image_size(src, model) -> int:
    """The image side a command uses when none is given: the run's data.size when the checkpoint
    belongs to a run with a config, else the checkpoint's training resolution (config.json
    ``resolution``: an imported 256-px tokenizer), else 64, the study's."""
    if src.run_dir is not None and RunLayout(src.run_dir).config.is_file():
        return int(run_config(src.run_dir).data.size)
    return int(getattr(model, "resolution", None) or 64)


def facts(*, name: str, data: str | None, step: int, command: str | None) -> dict:
    """The facts of a checkpoint the trainer has just written."""
    return {"name": name, "data": data, "step": int(step), "commands": [command] if command else []}


def read_facts(folder: str | Path) -> dict:
    """``training.json`` of a checkpoint folder ({} when it has none)."""
    path = Path(folder) / FACTS_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is not valid JSON; delete it (the checkpoint loads without it)") from None
    return data if isinstance(data, dict) else {}


def write_facts(folder: str | Path, run_facts: dict) -> None:
    write_atomic(Path(folder) / FACTS_NAME, json.dumps(run_facts, indent=2) + "\n")


def card_kwargs(run_facts: dict) -> dict:
    """``model_card`` / ``save_pretrained(model_card_kwargs=...)`` arguments from the facts."""
    commands = run_facts.get("commands") or []
    return {"dataset": run_facts.get("data"), "command": "\n".join(commands) or None, "name": run_facts.get("name")}


def write_card(folder: str | Path, *, repo_id: str | None = None) -> None:
    """(Re)generate ``folder``'s README.md from its config.json, metrics.json and training.json."""
    folder = Path(folder)
    metrics = read_metrics(folder)
    kwargs = card_kwargs(read_facts(folder))
    kwargs["dataset"] = kwargs["dataset"] or (metrics or {}).get("data_description")
    # A run's checkpoint (runs/<name>/checkpoints/step-N) is named after the run.
    run = RunLayout.of_checkpoint(folder)
    kwargs["name"] = kwargs["name"] or (run.root.name if run else folder.name)
    card = model_card(read_config(folder / CONFIG_NAME), metrics=metrics, repo_id=repo_id, **kwargs)
    write_atomic(folder / "README.md", str(card))


__all__ = ["FACTS_NAME", "METRICS_NAME", "facts", "read_facts", "write_facts", "card_kwargs", "write_card"]
