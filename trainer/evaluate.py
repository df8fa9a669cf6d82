"""``python -m trainer eval``: metrics of a checkpoint on a whole validation set -> metrics.json."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import torch

from vqexplore.errors import CheckpointError, ConfigError, MissingWeightsError
from vqexplore.hub import METRICS_NAME, resolve
from vqexplore.utils import write_atomic

from .checkpoint import STATE_JSON


def _run_config(src) -> dict | None:
    """The run's config.yaml when the checkpoint belongs to a run folder."""
    import yaml

    if src.run_dir is not None and (src.run_dir / "config.yaml").is_file():
        try:
            cfg = yaml.safe_load((src.run_dir / "config.yaml").read_text())
            return cfg if isinstance(cfg, dict) else None
        except yaml.YAMLError:
            return None
    return None


def training_info(ckpt_dir: Path) -> dict:
    """What is known about how a checkpoint was made: ``command``, ``data`` and ``step``, from its
    trainer state, else from the "How it was made" section of its model card."""
    info: dict = {}
    state = ckpt_dir / STATE_JSON
    if state.is_file():
        try:
            meta = json.loads(state.read_text())
            info = {k: meta.get(k) for k in ("command", "data", "step") if meta.get(k) is not None}
        except json.JSONDecodeError:
            pass
    card = ckpt_dir / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8", errors="replace")
        m = re.search(r"## How it was made\s*```\n(.*?)\n```", text, re.S)
        if m and "command" not in info:
            info["command"] = m.group(1).strip()
        m = re.search(r"## Training data\s*\n\s*\n(.+?)\n", text)
        if m and "data" not in info:
            info["data"] = m.group(1).strip()
    return info


def evaluate_checkpoint(ckpt: str, *, data: str | None = None, out: str | None = None, size: int | None = None,
                        batch_size: int = 64, max_images: int | None = None, device: str = "auto",
                        lpips_weights: str | None = None, rfid_weights: str | None = None,
                        update_card: bool = True, quiet: bool = False) -> tuple[dict, Path]:
    """Evaluate a checkpoint (folder, run folder or Hub repo id); write metrics.json.

    Returns (metrics, path written). LPIPS and rFID are computed when their pretrained weights
    are available offline; otherwise they are null and ``notes`` says why.
    """
    import vqexplore
    from vqexplore.data import describe_source, make_dataset
    from vqexplore.metrics import LPIPS, RFID, evaluate, weights_status

    from .distributed import pick_device

    # Arguments first: a bad one must not cost an evaluation (or leave a file behind).
    for flag, value in (("--batch-size", batch_size), ("--max-images", max_images), ("--size", size)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if size is not None and size % 4:
        raise ConfigError(f"--size must be a multiple of 4 (the tokenizers downsample by 4), got {size}")
    if out is not None and Path(out).is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name, e.g. --out {Path(out) / METRICS_NAME}")
    src = resolve(ckpt)
    if src.kind == "hub" and out is None:
        raise CheckpointError(f"{ckpt} is a Hub repo: pass --out FILE for its metrics")
    run_cfg = _run_config(src) or {}
    data = data or (run_cfg.get("data") or {}).get("val") or "builtin"
    size = size or (run_cfg.get("data") or {}).get("size") or 64
    lpips_weights = lpips_weights or (run_cfg.get("eval") or {}).get("lpips_weights")
    rfid_weights = rfid_weights or (run_cfg.get("eval") or {}).get("rfid_weights")
    dev = pick_device(device)

    model = vqexplore.load(src.path, device=dev)
    dataset = make_dataset(data, "val", size)
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size)

    notes = []
    status = weights_status(lpips_weights, rfid_weights)
    lpips = rfid = None
    if status["lpips"] is None:
        try:
            lpips = LPIPS(weights_path=lpips_weights).to(dev)
        except MissingWeightsError as e:
            status["lpips"] = str(e)
    if status["rfid"] is None:
        try:
            rfid = RFID(weights_path=rfid_weights, device=dev)
        except MissingWeightsError as e:
            status["rfid"] = str(e)
    for key, label in (("lpips", "LPIPS"), ("rfid", "rFID")):
        if status[key] is not None:
            notes.append(f"{label} skipped: {status[key]}")

    metrics = evaluate(model, loader, device=dev, lpips=lpips, rfid=rfid)
    metrics.setdefault("lpips", None)
    metrics.setdefault("rfid", None)
    info = training_info(src.path)
    metrics.update({
        "split": "val", "data": str(data), "data_description": describe_source(data), "image_size": size,
        "checkpoint": str(ckpt), "step": src.step if src.step is not None else info.get("step"),
        "notes": notes,
    })
    path = Path(out) if out else src.path / METRICS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(metrics, indent=2) + "\n")
    if update_card and out is None and src.kind != "hub":
        _refresh_card(model, src.path, metrics, info)
    if not quiet:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        print(f"{src.name}: usage {metrics['usage']:.2%}, perplexity {metrics['perplexity']:.1f}, "
              f"dead codes {metrics['dead_codes']}/{metrics['codebook_size']}, PSNR {metrics['psnr']:.3f} dB, "
              f"SSIM {metrics['ssim']:.4f}"
              + (f", LPIPS {metrics['lpips']:.4f}" if metrics["lpips"] is not None else "")
              + (f", rFID {metrics['rfid']:.2f}" if metrics["rfid"] is not None else "")
              + f" on {metrics['num_images']} val images -> {path}")
    return metrics, path


def _refresh_card(model, folder: Path, metrics: dict, info: dict) -> None:
    """Rewrite the checkpoint's model card with the metrics (keeping its data and command)."""
    from vqexplore.hub import model_card

    name = folder.parent.parent.name if folder.parent.name == "checkpoints" else folder.name
    card = model_card(model.config, metrics=metrics, dataset=info.get("data") or metrics.get("data_description"),
                      command=info.get("command"), name=name)
    write_atomic(folder / "README.md", str(card))
