"""Command line of the trainer (``python -m trainer --help``)."""
from __future__ import annotations

import argparse
import shlex
import sys

from vqexplore.errors import ConfigError, VQExploreError

USAGE = """\
python -m trainer --cfg CONFIG.yaml [key=value ...] [--resume]
       python -m trainer eval  --ckpt DIR [--data SRC] [--out FILE]
       python -m trainer push  --ckpt DIR --repo user/name [--private]
       python -m trainer sweep CONFIG_DIR [--out docs/cpu_sweep.md] [key=value ...]
       python -m trainer export --ckpt DIR --to FOLDER
       torchrun --nproc-per-node N -m trainer --cfg CONFIG.yaml [key=value ...]"""

DESCRIPTION = """\
Train vector-quantized image autoencoders (VQ, FSQ, SimVQ) and publish them.

commands:
  (train)   --cfg FILE [key=value ...]   train the run <out_dir>/<name> described by FILE; overrides
            such as train.steps=200 model.codebook_size=1024 data.train=/data/imagenet/train are
            validated like the file. Writes runs/<name>/config.yaml, metrics.jsonl, TensorBoard
            events, samples/*.png and checkpoints/step-XXXXXXXX/ (save_pretrained format + trainer
            state). --resume continues from the newest complete checkpoint.
            Several processes: torchrun --nproc-per-node N -m trainer --cfg FILE (DDP).
  eval      --ckpt DIR  metrics on the whole validation set (usage, perplexity, dead codes, PSNR,
            SSIM; LPIPS and rFID when their weights are available offline) -> DIR/metrics.json
  push      --ckpt DIR --repo user/name  upload the checkpoint with a model card to the Hub
  sweep     CONFIG_DIR  train + evaluate every row (default*.yaml skipped), write the study's tables
  export    --ckpt DIR --to FOLDER  copy a checkpoint without its optimizer state (demo checkpoints)

Config files: configs/cpu/ (laptop scale, built-in photos) and configs/imagenet64/ (the study).
Run `python -m trainer COMMAND --help` for a command's options. Errors you can fix print one line
`error: ...` (exit 2 for a bad config, 1 otherwise)."""


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer", usage=USAGE, description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", metavar="FILE", help="YAML config (keys: trainer/config.py; model: keys: VQModel's docstring)")
    p.add_argument("--resume", action="store_true",
                   help="continue <out_dir>/<name> from its newest complete checkpoint (start if none)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=200")
    return p


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer eval",
                                description="Evaluate a checkpoint on a whole validation set; writes metrics.json.")
    p.add_argument("--ckpt", required=True, help="checkpoint folder, run folder (newest checkpoint) or Hub repo id")
    p.add_argument("--data", help="validation source (default: the run's data.val, else builtin)")
    p.add_argument("--out", help="where to write the JSON (default: <ckpt>/metrics.json)")
    p.add_argument("--size", type=int, help="image size (default: the run's data.size, else 64)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-images", type=int, help="evaluate only the first N validation images")
    p.add_argument("--device", default="auto")
    p.add_argument("--lpips-weights", help="AlexNet weights file for LPIPS (default: torch's hub cache)")
    p.add_argument("--rfid-weights", help="InceptionV3 weights file for rFID (default: torch's hub cache)")
    return p


def _push_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer push",
                                description="Upload a checkpoint folder (weights, config, metrics, model card) to the Hub.")
    p.add_argument("--ckpt", required=True, help="checkpoint folder or run folder")
    p.add_argument("--repo", required=True, help="Hub repo id, user/name")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or `hf auth login`)")
    return p


def _sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer sweep",
                                description="Train and evaluate every config of a folder; write markdown tables.")
    p.add_argument("folder", help="folder of YAML configs, e.g. configs/cpu")
    p.add_argument("--out", default="docs/cpu_sweep.md", help="markdown file to write (default: docs/cpu_sweep.md)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides applied to every row")
    return p


def _export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer export",
                                description="Copy a checkpoint's config.json, model.safetensors, README.md and "
                                            "metrics.json (no optimizer state) to a folder.")
    p.add_argument("--ckpt", required=True, help="checkpoint folder or run folder")
    p.add_argument("--to", required=True, help="destination folder (created; must not hold another checkpoint)")
    p.add_argument("--weights", choices=("live", "ema", "best"), default="live",
                   help="live: the trained weights; ema: their EMA (step-N/ema, train.ema_decay > 0); "
                        "best: whichever scored the higher PSNR at the checkpoint's validation")
    return p


def _command_line(argv: list[str]) -> str:
    return "python -m trainer " + " ".join(shlex.quote(a) for a in argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except VQExploreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _dispatch(argv: list[str]) -> int:
    command = argv[0] if argv and not argv[0].startswith("-") and "=" not in argv[0] else None
    if command == "eval":
        from .evaluate import evaluate_checkpoint

        a = _eval_parser().parse_args(argv[1:])
        evaluate_checkpoint(a.ckpt, data=a.data, out=a.out, size=a.size, batch_size=a.batch_size,
                            max_images=a.max_images, device=a.device, lpips_weights=a.lpips_weights,
                            rfid_weights=a.rfid_weights)
        return 0
    if command == "push":
        from .push import push_checkpoint

        a = _push_parser().parse_args(argv[1:])
        url = push_checkpoint(a.ckpt, a.repo, private=a.private, token=a.token)
        print(f"pushed {a.ckpt} to {url}")
        return 0
    if command == "sweep":
        from .sweep import run_sweep

        a = _sweep_parser().parse_intermixed_args(argv[1:])
        run_sweep(a.folder, out=a.out, overrides=a.overrides, command=_command_line(argv))
        return 0
    if command == "export":
        from .export import export_checkpoint

        a = _export_parser().parse_args(argv[1:])
        dest, chosen = export_checkpoint(a.ckpt, a.to, weights=a.weights)
        print(f"exported the {chosen} weights to {dest}")
        return 0
    if command is not None and command != "train":
        raise ConfigError(f"unknown command {command!r}; use eval, push, sweep, export or --cfg FILE to train "
                          f"(python -m trainer --help)")
    if command == "train":
        argv = argv[1:]
    a = _train_parser().parse_intermixed_args(argv)
    if a.cfg is None:
        raise ConfigError("--cfg FILE is required to train, e.g. python -m trainer --cfg configs/cpu/default.yaml "
                          "(see python -m trainer --help)")
    from .config import load_config
    from .train import train

    cfg = load_config(a.cfg, a.overrides)
    train(cfg, resume=a.resume, command=_command_line(argv))
    return 0
