"""``python -m trainer eval``: metrics of a checkpoint on a whole validation set -> metrics.json."""
from __future__ import annotations

import json
import sys
from pathlib import Path

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


def eval_protocol(run_val: str | None, *, data: str | None = None, size: int | None = None,
                  max_images: int | None = None, crop: str | None = None, usage_scales: str | None = None,
                  metrics: tuple[str, ...] | None = None):
    """The protocol ``trainer eval`` measures under: the flags, else the run's data.val (``run_val``;
    else the held-out photos) at ``size`` (else 64 px), through ``Protocol.for_source``."""
    from vqexplore.protocol import DEFAULT_METRICS, Protocol

    data = data or run_val or "photos"
    size = size or 64
    kw = {"metrics": tuple(metrics or (*DEFAULT_METRICS, "lpips", "rfid"))}
    if usage_scales is not None:
        text = usage_scales.strip().lower()
        try:
            kw["usage_scales"] = () if text in ("", "none", "0") else tuple(int(v) for v in text.split(","))
        except ValueError:
            raise ConfigError(f"--usage-scales takes shorter sides like 64,128,256,512 or none, got {usage_scales!r}") \
                from None
    protocol = Protocol.for_source(str(data), int(size), count=max_images, **kw)
    if crop is not None and crop != protocol.crop:
        protocol = Protocol(protocol.source, protocol.split, protocol.size, crop, protocol.count, protocol.metrics,
                            protocol.usage_scales)
    return protocol


def evaluate_checkpoint(ckpt: str, *, data: str | None = None, out: str | None = None, size: int | None = None,
                        batch_size: int = 64, max_images: int | None = None, device: str = "auto",
                        lpips_weights: str | None = None, rfid_weights: str | None = None,
                        update_card: bool = True, quiet: bool = False, crop: str | None = None,
                        usage_scales: str | None = None, workers: int = 0, views: bool = True) -> tuple[dict, Path]:
    """Evaluate a checkpoint (folder, run folder or Hub repo id) under one evaluation protocol
    (``vqexplore.protocol``); write metrics.json, which records the protocol, its key, the weights'
    sha256 and the per-code counts (so the dashboard can show these numbers without measuring again).

    Returns (metrics, path written). LPIPS and rFID are computed when their pretrained weights
    are available offline; otherwise they are null and ``notes`` says why. Data, image size and
    metric weights default to the run's own config.yaml when the checkpoint belongs to a run.

    views: with no ``out`` and a local checkpoint, also store the dashboard's views beside it
    (``trainer.views``: the default projection, the default protocol's evaluation).
    """
    import vqexplore
    from vqexplore.protocol import cached_evaluation, evaluate_protocol, weights_hash

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
    dev = pick_device(device)
    model = vqexplore.load(src.path, device=dev)
    if size is not None and size % model.downsample:
        raise ConfigError(f"--size must be a multiple of {model.downsample} (this tokenizer's downsampling), "
                          f"got {size}")
    protocol = eval_protocol(run_cfg.data.val if src.run_dir else None, data=data,
                             size=size or default_image_size(src, model), max_images=max_images, crop=crop,
                             usage_scales=usage_scales)
    protocol.num_images()  # a source without images fails here, in one line
    lpips, rfid, notes = _metric_models(lpips_weights or run_cfg.eval.lpips_weights,
                                        rfid_weights or run_cfg.eval.rfid_weights, dev)
    if src.kind == "hub":
        result = evaluate_protocol(model, protocol, lpips=lpips, rfid=rfid, batch_size=batch_size, device=dev,
                                   workers=workers)
    else:
        # the dashboard's cache: the same (weights, protocol) is measured once, by whoever comes first
        result = cached_evaluation(src.path, model, protocol, lpips=lpips, rfid=rfid, batch_size=batch_size,
                                   workers=workers)
    from vqexplore.data import describe_source

    info = training_info(src.path)
    metrics = {k: v for k, v in result.metrics.items()}
    metrics.update({
        "split": protocol.split, "data": protocol.source, "data_description": describe_source(protocol.source),
        "image_size": protocol.size, "checkpoint": str(ckpt),
        "step": src.step if src.step is not None else info.get("step"), "notes": notes,
        "weights_sha256": weights_hash(src.path), "code_counts": [int(c) for c in result.counts],
    })
    path = Path(out) if out else src.path / METRICS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, metrics_json(metrics))
    if update_card and out is None and src.kind != "hub":
        if info and not read_facts(src.path):
            write_facts(src.path, info)  # an older run checkpoint: its facts as training.json
        write_card(src.path)
    if views and out is None and src.kind != "hub":
        from .views import write_views

        write_views(src.path, model=model, quiet=quiet)
    if not quiet:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        print(_summary(src.name, metrics, path), file=sys.stderr)
    return metrics, path


def metrics_json(metrics: dict) -> str:
    """metrics.json's text: indented, the per-code counts on one line (K numbers)."""
    rest = {k: v for k, v in metrics.items() if k != "code_counts"}
    text = json.dumps(rest, indent=2)
    if "code_counts" in metrics:
        text = text[:-2] + ',\n  "code_counts": ' + json.dumps(metrics["code_counts"], separators=(",", ":")) + "\n}"
    return text + "\n"


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
            + f", {m['bits_per_pixel_entropy']:.3f} bits per pixel (entropy)"
            + f" under {m['protocol_description']} -> {path}")
