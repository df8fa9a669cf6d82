"""``python -m trainer eval``: metrics of a checkpoint on a whole validation set -> metrics.json."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from vqexplore.errors import CheckpointError, ConfigError, MissingWeightsError
from vqexplore.hub import METRICS_NAME, resolve
from vqexplore.utils import write_atomic

from .checkpoint import STATE_JSON
from .runfacts import default_image_size, read_facts, run_config, write_card, write_facts


def training_info(ckpt_dir: Path) -> dict:
    """How a checkpoint was made (``name``, ``data``, ``step``, ``commands``): its training.json,
    or for a run checkpoint written before training.json existed, the same facts from its
    trainer_state.json."""
    facts = read_facts(ckpt_dir)
    state = ckpt_dir / STATE_JSON
    if facts or not state.is_file():
        return facts
    try:
        meta = json.loads(state.read_text())
    except json.JSONDecodeError:
        return {}
    return {"data": meta.get("data"), "step": meta.get("step"),
            "commands": [meta["command"]] if meta.get("command") else []}


def evaluate_checkpoint(ckpt: str, *, data: str | None = None, out: str | None = None, size: int | None = None,
                        batch_size: int = 64, max_images: int | None = None, device: str = "auto",
                        lpips_weights: str | None = None, rfid_weights: str | None = None,
                        update_card: bool = True, quiet: bool = False) -> tuple[dict, Path]:
    """Evaluate a checkpoint (folder, run folder or Hub repo id); write metrics.json.

    Returns (metrics, path written). LPIPS and rFID are computed when their pretrained weights
    are available offline; otherwise they are null and ``notes`` says why. Data, image size and
    metric weights default to the run's own config.yaml when the checkpoint belongs to a run.
    """
    import vqexplore
    from vqexplore.data import describe_source, make_dataset
    from vqexplore.metrics import evaluate

    from .distributed import pick_device

    # Arguments first: a bad one must not cost an evaluation (or leave a file behind).
    for flag, value in (("--batch-size", batch_size), ("--max-images", max_images), ("--size", size)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if out is not None and Path(out).is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name, e.g. --out {Path(out) / METRICS_NAME}")
    src = resolve(ckpt)
    if src.kind == "hub" and out is None:
        raise CheckpointError(f"{ckpt} is a Hub repo: pass --out FILE for its metrics")
    run_cfg = run_config(src.run_dir)  # the run's validated config, or the defaults
    data = data or run_cfg.data.val
    dev = pick_device(device)
    model = vqexplore.load(src.path, device=dev)
    if size is not None and size % model.downsample:
        raise ConfigError(f"--size must be a multiple of {model.downsample} (this tokenizer's downsampling), "
                          f"got {size}")
    size = size or default_image_size(src, model)
    dataset = make_dataset(data, "val", size)
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size)
    lpips, rfid, notes = _metric_models(lpips_weights or run_cfg.eval.lpips_weights,
                                        rfid_weights or run_cfg.eval.rfid_weights, dev)
    metrics = {"lpips": None, "rfid": None, **evaluate(model, loader, device=dev, lpips=lpips, rfid=rfid)}
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
        if info and not read_facts(src.path):
            write_facts(src.path, info)  # an older run checkpoint: its facts as training.json
        write_card(src.path)
    if not quiet:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        print(_summary(src.name, metrics, path), file=sys.stderr)
    return metrics, path


def _metric_models(lpips_weights: str | None, rfid_weights: str | None, device) -> tuple:
    """(LPIPS or None, RFID or None, notes saying why one is skipped): each only when its
    pretrained weights are available offline."""
    from vqexplore.metrics import LPIPS, RFID, weights_status

    status = weights_status(lpips_weights, rfid_weights)
    lpips = rfid = None
    if status["lpips"] is None:
        try:
            lpips = LPIPS(weights_path=lpips_weights).to(device)
        except MissingWeightsError as e:
            status["lpips"] = str(e)
    if status["rfid"] is None:
        try:
            rfid = RFID(weights_path=rfid_weights, device=device)
        except MissingWeightsError as e:
            status["rfid"] = str(e)
    notes = [f"{label} skipped: {status[key]}" for key, label in (("lpips", "LPIPS"), ("rfid", "rFID"))
             if status[key] is not None]
    return lpips, rfid, notes


def _summary(name: str, m: dict, path: Path) -> str:
    return (f"{name}: usage {m['usage']:.2%}, perplexity {m['perplexity']:.1f}, "
            f"dead codes {m['dead_codes']}/{m['codebook_size']}, PSNR {m['psnr']:.3f} dB, SSIM {m['ssim']:.4f}"
            + (f", LPIPS {m['lpips']:.4f}" if m["lpips"] is not None else "")
            + (f", rFID {m['rfid']:.2f}" if m["rfid"] is not None else "")
            + f" on {m['num_images']} val images -> {path}")
