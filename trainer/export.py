"""``python -m trainer export``: a checkpoint without its optimizer state (for demo checkpoints)."""
from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

from vqexplore.errors import CheckpointError
from vqexplore.hub import CONFIG_NAME, EMA_DIR, METRICS_NAME, WEIGHTS_NAME, read_run_metrics, resolve
from vqexplore.runlayout import EVALUATION_VIEW, PROJECTION_VIEW

from .checkpoint import STATE_JSON
from .evaluate import training_info
from .runfacts import FACTS_NAME, write_card, write_facts

FILES = (CONFIG_NAME, WEIGHTS_NAME, METRICS_NAME)
WEIGHT_FILES = (CONFIG_NAME, WEIGHTS_NAME, PROJECTION_VIEW, EVALUATION_VIEW)  # taken from ema/ for the EMA


def export_checkpoint(ckpt: str, to: str, weights: str = "live", views: bool = True) -> tuple[Path, str]:
    """Copy config.json, model.safetensors and metrics.json of ``ckpt`` into ``to``, with its
    training.json extended by the eval and export commands, and a model card made from them;
    returns (``to``, "live" or "ema").

    weights: "live" (the trained weights), "ema" (the weight EMA saved in ``step-N/ema``) or
    "best" (whichever scored the higher validation PSNR at that step in the run's metrics.jsonl).
    views: also store the dashboard's views beside the exported weights (``trainer.views``: the
    default projection and the default protocol's evaluation; the source's own are reused when
    they were made from the same weights), so that no app computes them again.
    """
    src = resolve(ckpt)
    if src.kind == "hub":
        raise CheckpointError(f"{ckpt} is a Hub repo; export takes a local checkpoint or run folder")
    dest = Path(to)
    if dest.resolve() == src.path.resolve():
        raise CheckpointError(f"--to {dest} is the checkpoint itself; choose another folder")
    if dest.exists() and any(dest.iterdir()) and not (dest / CONFIG_NAME).exists():
        raise CheckpointError(f"--to {dest} exists and is not a checkpoint folder; choose an empty or new folder")
    chosen = _choose_weights(src.path, weights)
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES + (PROJECTION_VIEW, EVALUATION_VIEW):
        origin = src.path / EMA_DIR if chosen == "ema" and name in WEIGHT_FILES else src.path
        if (origin / name).is_file():
            shutil.copy2(origin / name, dest / name)
        else:
            (dest / name).unlink(missing_ok=True)  # a stale file of an earlier export
    (dest / STATE_JSON).unlink(missing_ok=True)
    facts = training_info(src.path)
    if facts:
        facts["name"] = dest.name  # an exported checkpoint is known by its folder (checkpoints/vq-512)
        facts.update(_recipe_facts(src.path))
        # The commands after training, once each: how this very folder was made.
        commands = [c for c in facts.get("commands", [])
                    if not c.startswith(("python -m trainer eval ", "python -m trainer export "))]
        if (dest / METRICS_NAME).is_file():
            commands.append(f"python -m trainer eval --ckpt {shlex.quote(ckpt)}")
        commands.append(f"python -m trainer export --ckpt {shlex.quote(ckpt)} --to {shlex.quote(to)}"
                        + (f" --weights {weights}" if weights != "live" else ""))
        write_facts(dest, {**facts, "commands": commands})
    else:
        (dest / FACTS_NAME).unlink(missing_ok=True)
    write_card(dest)
    if views:
        from .views import write_views

        write_views(dest)  # what was copied and is still valid for these weights is kept as it is
    return dest, chosen


def _recipe_facts(step_dir: Path) -> dict:
    """What the run's recorded config says beyond the model: the weights it started from
    (``init_from``) and its VQGAN stage (``adversarial``, in words), when it had them."""
    try:
        config = json.loads((step_dir / STATE_JSON).read_text()).get("config") or {}
    except (OSError, ValueError):
        return {}
    out = {}
    if (init := (config.get("train") or {}).get("init_from")):
        out["init_from"] = init
    loss = config.get("loss") or {}
    if loss.get("adv_weight"):
        weight = f"taming's adaptive weight x {loss['adv_weight']:g}" if loss.get("adaptive_weight") \
            else f"weight {loss['adv_weight']:g}"
        out["adversarial"] = (f"PatchGAN {loss.get('disc_loss', 'hinge')} loss, {weight}, from step "
                              f"{loss.get('disc_start', 0):,}")
    if loss.get("lpips_weight"):
        out["perceptual"] = f"LPIPS (VGG16) x {loss['lpips_weight']:g}"
    return out


def _choose_weights(step_dir: Path, weights: str) -> str:
    has_ema = (step_dir / EMA_DIR / WEIGHTS_NAME).is_file()
    if weights == "ema" and not has_ema:
        raise CheckpointError(f"{step_dir} has no weight EMA ({EMA_DIR}/); train with train.ema_decay > 0 "
                              f"or export --weights live")
    if weights != "best":
        return weights
    if not has_ema:
        return "live"
    step = int(json.loads((step_dir / STATE_JSON).read_text())["step"]) if (step_dir / STATE_JSON).is_file() else None
    rows = {r["split"]: r for r in read_run_metrics(step_dir.parent.parent)
            if r.get("step") == step and r.get("split") in ("val", "val_ema")}
    if "val" not in rows or "val_ema" not in rows:
        raise CheckpointError(f"{step_dir}: the run's metrics.jsonl has no validation of both weights at this "
                              f"step; export --weights live or --weights ema")
    return "ema" if rows["val_ema"]["psnr"] > rows["val"]["psnr"] else "live"
