"""Command line of the trainer (``python -m trainer --help``)."""
from __future__ import annotations

import argparse
import errno
import shlex
import sys

from vqexplore.errors import ConfigError, VQExploreError

USAGE = """\
python -m trainer --cfg CONFIG.yaml [key=value ...] [--resume]
       python -m trainer eval  --ckpt DIR [--data SRC] [--out FILE]
       python -m trainer push  --ckpt DIR --repo user/name [--private]
       python -m trainer sweep CONFIG_DIR [--out docs/cpu_sweep.md] [--only ROW ...] [key=value ...]
       python -m trainer export --ckpt DIR --to FOLDER
       python -m trainer export --projector --ckpt DIR --out FOLDER
       python -m trainer tokenize --ckpt DIR --data SRC --out FOLDER [--split train|val]
       python -m trainer import {llamagen,taming,diffusers} SRC --out FOLDER
       torchrun --nproc-per-node N -m trainer --cfg CONFIG.yaml [key=value ...]"""

DESCRIPTION = """\
Train vector-quantized image autoencoders ({quantizers}) and publish them.

commands:
  (train)   --cfg FILE [key=value ...]   train the run <out_dir>/<name> described by FILE; overrides
            such as train.steps=200 model.codebook_size=1024 data.train=/data/imagenet/train are
            validated like the file. Writes runs/<name>/config.yaml, metrics.jsonl, TensorBoard
            events, samples/*.png and checkpoints/step-XXXXXXXX/ (save_pretrained format + trainer
            state). --resume continues from the newest complete checkpoint.
            Several processes: torchrun --nproc-per-node N -m trainer --cfg FILE (DDP).
  eval      --ckpt DIR  metrics under one evaluation protocol (--data, --size, --crop, --max-images,
            --usage-scales: usage, perplexity, dead codes, PSNR, SSIM, bits per image and per pixel; LPIPS
            and rFID when their weights are available offline) -> DIR/metrics.json, which records it;
            also stores the dashboard's views beside the checkpoint (--no-views: not)
  push      --ckpt DIR --repo user/name  upload the checkpoint with a model card to the Hub
  sweep     CONFIG_DIR  train + evaluate every row (default*.yaml skipped), write the study's tables;
            --only ROW ... reruns some rows and keeps the others' recorded results
  export    --ckpt DIR --to FOLDER  copy a checkpoint without its optimizer state (demo checkpoints),
            with the dashboard's views stored beside it (codebook projection, usage counts; --no-views: not)
            --projector --ckpt DIR --out FOLDER  TensorBoard Embedding Projector files of the codebook
            (vectors, usage metadata, a sprite of decoded tiles): tensorboard --logdir FOLDER
  tokenize  --ckpt DIR --data SRC --out FOLDER  token grids of a whole dataset (memory-mapped
            tokens.npy + index.json with image ids and the checkpoint's sha256); resumable
  import    {{llamagen,taming,diffusers}} SRC --out FOLDER  a published VQGAN tokenizer (LlamaGen .pt,
            taming .ckpt, diffusers VQModel folder) as a vqexplore checkpoint folder

Config files: configs/cpu/ (laptop scale, built-in photos) and configs/imagenet64/ (the study).
Run `python -m trainer COMMAND --help` for a command's options. Errors you can fix print one line
`error: ...` (exit 2 for a bad config, 1 otherwise)."""


def _description() -> str:
    """DESCRIPTION with every quantizer the library has (``vqexplore.modelconfig.QUANTIZERS``)."""
    from vqexplore.describe import QUANTIZER_NAMES
    from vqexplore.modelconfig import QUANTIZERS

    return DESCRIPTION.format(quantizers=", ".join(QUANTIZER_NAMES.get(q, q) for q in QUANTIZERS))


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer", usage=USAGE, description=_description(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", metavar="FILE",
                   help="YAML config (keys: trainer/config.py; model: keys: VQModel's docstring)")
    p.add_argument("--resume", action="store_true",
                   help="continue <out_dir>/<name> from its newest complete checkpoint (start if none)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=200")
    return p


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer eval",
                                description="Evaluate a checkpoint on a whole validation set; writes metrics.json.")
    p.add_argument("--ckpt", required=True, help="checkpoint folder, run folder (newest checkpoint) or Hub repo id")
    p.add_argument("--data", help="validation source: builtin, photos, a folder, Downsampled ImageNet files or "
                                  "hf:<dataset> (default: the run's data.val, else photos: the held-out photos)")
    p.add_argument("--out", help="where to write the JSON (default: <ckpt>/metrics.json)")
    p.add_argument("--size", type=int, help="image size (default: the run's data.size, else 64)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-images", type=int, help="evaluate only the first N validation images")
    p.add_argument("--crop", choices=["center", "crops"],
                   help="center: shorter side resized, centre crop; crops: the built-in photos' fixed multi-scale "
                        "crops (default: crops for builtin, center for every other source)")
    p.add_argument("--usage-scales", metavar="SIDES",
                   help="count usage over the images whole at these shorter sides, e.g. 64,128,256,512, or none "
                        "(default: 64,128,256,512 for photos, none otherwise)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes decoding the images")
    p.add_argument("--device", default="auto")
    p.add_argument("--lpips-weights", help="AlexNet weights file for LPIPS (default: torch's hub cache)")
    p.add_argument("--rfid-weights", help="InceptionV3 weights file for rFID (default: torch's hub cache)")
    p.add_argument("--no-views", action="store_true",
                   help="do not store the dashboard's views (the default projection of the codebook and the default "
                        "protocol's usage counts) beside the checkpoint (they are stored only without --out)")
    return p


def _push_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer push",
                                description="Upload a checkpoint folder (weights, config, metrics, model card) to the "
                                            "Hub.")
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
    p.add_argument("--only", nargs="+", metavar="ROW",
                   help="rerun only these rows (file stems, e.g. lfq-16384); keep the others' recorded results from "
                        "the rows file beside --out (docs/cpu_sweep.json)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides applied to every row")
    return p


def _export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer export",
                                description="Copy a checkpoint's config.json, model.safetensors, metrics.json and "
                                            "training.json (no optimizer state) to a folder, with a model card "
                                            "made from them.")
    p.add_argument("--ckpt", required=True, help="checkpoint folder or run folder")
    p.add_argument("--to", help="destination folder (created; must not hold another checkpoint)")
    p.add_argument("--weights", choices=("live", "ema", "best"), default="live",
                   help="live: the trained weights; ema: their EMA (step-N/ema, train.ema_decay > 0); "
                        "best: whichever scored the higher PSNR at the checkpoint's validation")
    p.add_argument("--no-views", action="store_true",
                   help="do not store the dashboard's views (the default projection of the codebook and the "
                        "default protocol's usage counts, PSNR and SSIM) beside the exported weights; the apps then "
                        "compute them on first use")
    p.add_argument("--projector", action="store_true",
                   help="write TensorBoard Embedding Projector files to --out instead (see trainer/projector.py)")
    p.add_argument("--out", help="with --projector: the folder to write (then: tensorboard --logdir FOLDER)")
    p.add_argument("--data", default="builtin", help="with --projector: images whose token counts become metadata")
    p.add_argument("--size", type=int, help="with --projector: image size (default: the run's data.size, else 64)")
    p.add_argument("--images", type=int, default=256, help="with --projector: validation images to count on")
    p.add_argument("--device", default="auto")
    return p


def _tokenize_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer tokenize",
                                description="Token grids of a whole dataset: DIR/tokens.npy (N, h, w) memory-mapped, "
                                            "DIR/index.json (image ids, checkpoint sha256). Rerun to resume.")
    p.add_argument("--ckpt", required=True, help="checkpoint folder, run folder (newest checkpoint) or Hub repo id")
    p.add_argument("--data", required=True, help="builtin, an image folder, Downsampled ImageNet files or hf:<name>")
    p.add_argument("--out", required=True,
                   help="folder to write (a folder of an unfinished run of the same job resumes)")
    p.add_argument("--split", default="train", choices=["train", "val"],
                   help="train: the trainer's epoch-0 crops (a pure function of --seed); val: centre crops")
    p.add_argument("--size", type=int, help="image size (default: the run's data.size, else 64)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2, help="DataLoader processes decoding images (0: in this process)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-images", type=int, help="only the first N images")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _import_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainer import",
        description="Convert a published VQGAN tokenizer into a vqexplore checkpoint folder (config.json, "
                    "model.safetensors, model card naming the source and its licence). The architecture is "
                    "read from the weights' shapes; the flags give what shapes cannot tell.")
    p.add_argument("kind", choices=["llamagen", "taming", "diffusers"],
                   help="llamagen: a .pt with its 'model' state dict (e.g. vq_ds16_c2i.pt); taming: a Lightning "
                        ".ckpt (e.g. vqgan_imagenet_f16_1024/ckpts/last.ckpt); diffusers: a VQModel folder")
    p.add_argument("src", help="the checkpoint file (llamagen, taming) or folder (diffusers)")
    p.add_argument("--out", required=True, help="the vqexplore checkpoint folder to write (new or empty)")
    p.add_argument("--resolution", type=int,
                   help="training image side (default: diffusers' sample_size, else 256 as the published models)")
    p.add_argument("--norm-groups", type=int, help="GroupNorm groups (default: diffusers' norm_num_groups, else 32)")
    p.add_argument("--l2-norm", choices=["true", "false"],
                   help="l2-normalised codebook (default: true for llamagen, as codebook_l2_norm is published; "
                        "false otherwise)")
    return p


def _import(argv: list[str]) -> None:
    from vqexplore.importers import import_checkpoint

    a = _import_parser().parse_args(argv[1:])
    l2 = None if a.l2_norm is None else a.l2_norm == "true"
    res = import_checkpoint(a.kind, a.src, a.out, resolution=a.resolution, norm_groups=a.norm_groups, l2_norm=l2,
                            command=_command_line(argv))
    c = res.config
    print(f"imported {a.kind} {a.src} -> {a.out}: VQGAN f{2 ** (len(c['ch_mult']) - 1)}, {c['codebook_size']:,} "
          f"codes of dim {c['code_dim']}{' (l2-normalised)' if c['l2_norm'] else ''}, trained at "
          f"{c['resolution']} px; {len(res.dropped)} training-only tensors dropped")


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
    except OSError as e:  # a full disk, a read-only folder, ...: what failed, where, what to do
        print(f"error: {describe_os_error(e)}", file=sys.stderr)
        return 1


_OS_ERROR_HINTS = {
    errno.ENOSPC: "free disk space or write elsewhere", errno.EDQUOT: "free disk space or write elsewhere",
    errno.EFBIG: "free disk space or raise the file size limit (ulimit -f)",
    errno.EACCES: "check the permissions or write elsewhere", errno.EPERM: "check the permissions or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere (e.g. out_dir=...)",
    errno.ENOTDIR: "a file stands where a folder is needed: move it or choose another path",
    errno.EISDIR: "a folder stands where a file is needed: give a file name",
}


def describe_os_error(e: OSError) -> str:
    """One line for an operating-system error: what failed, the path, what to do. Files are
    written atomically (temporary name, then rename), so nothing complete was lost."""
    where = f" ({e.filename})" if e.filename else ""
    hint = _OS_ERROR_HINTS.get(e.errno, "check the path and the disk")
    return f"{e.strerror or type(e).__name__}{where}; {hint}"


def _dispatch(argv: list[str]) -> int:
    command = argv[0] if argv and not argv[0].startswith("-") and "=" not in argv[0] else None
    if command in COMMANDS:
        COMMANDS[command](argv)
        return 0
    if command is not None and command != "train":
        raise ConfigError(f"unknown command {command!r}; use {', '.join(COMMANDS)} or --cfg FILE to train "
                          f"(python -m trainer --help)")
    _train(argv[1:] if command == "train" else argv)
    return 0


def _train(argv: list[str]) -> None:
    a = _train_parser().parse_intermixed_args(argv)
    if a.cfg is None:
        raise ConfigError("--cfg FILE is required to train, e.g. python -m trainer --cfg configs/cpu/default.yaml "
                          "(see python -m trainer --help)")
    from .config import load_config

    cfg = load_config(a.cfg, a.overrides)  # torch-free: a config that cannot run is refused before `import torch`
    from .train import train

    train(cfg, resume=a.resume, command=_command_line(argv))


def _eval(argv: list[str]) -> None:
    from .evaluate import evaluate_checkpoint

    a = _eval_parser().parse_args(argv[1:])
    evaluate_checkpoint(a.ckpt, data=a.data, out=a.out, size=a.size, batch_size=a.batch_size,
                        max_images=a.max_images, device=a.device, lpips_weights=a.lpips_weights,
                        rfid_weights=a.rfid_weights, crop=a.crop, usage_scales=a.usage_scales, workers=a.workers,
                        views=not a.no_views)


def _push(argv: list[str]) -> None:
    from .push import push_checkpoint

    a = _push_parser().parse_args(argv[1:])
    url = push_checkpoint(a.ckpt, a.repo, private=a.private, token=a.token)
    print(f"pushed {a.ckpt} to {url}")


def _sweep(argv: list[str]) -> None:
    from .sweep import run_sweep

    a = _sweep_parser().parse_intermixed_args(argv[1:])
    only = [x for x in a.only or [] if "=" not in x] or None  # --only A B key=value: the key=value is an override
    overrides = [x for x in a.only or [] if "=" in x] + a.overrides
    run_sweep(a.folder, out=a.out, overrides=overrides, command=_command_line(argv), only=only)


def _export(argv: list[str]) -> None:
    a = _export_parser().parse_args(argv[1:])
    if a.projector:
        from .projector import export_projector

        if not a.out:
            raise ConfigError("export --projector needs --out FOLDER (then: tensorboard --logdir FOLDER)")
        info = export_projector(a.ckpt, a.out, data=a.data, size=a.size, num_images=a.images, device=a.device)
        print(f"wrote {info['codebook_size']} codes ({info['used_codes']} used on {info['num_images']} images) "
              f"to {a.out}; view them with: tensorboard --logdir {shlex.quote(a.out)}")
        return
    if not a.to:
        raise ConfigError("export needs --to FOLDER (or --projector --out FOLDER)")
    from .export import export_checkpoint

    dest, chosen = export_checkpoint(a.ckpt, a.to, weights=a.weights, views=not a.no_views)
    print(f"exported the {chosen} weights to {dest}")


def _tokenize(argv: list[str]) -> None:
    from .tokenize import tokenize_dataset

    a = _tokenize_parser().parse_args(argv[1:])
    info = tokenize_dataset(a.ckpt, a.data, a.out, split=a.split, size=a.size, batch_size=a.batch_size,
                            workers=a.workers, device=a.device, seed=a.seed, max_images=a.max_images,
                            progress=not a.no_progress)
    rate = info.get("images_per_second")
    print(f"tokenized {info['num_images']} images into {a.out} ({info['grid'][0]}x{info['grid'][1]} tokens, "
          f"{info['dtype']})" + (f" at {rate:.0f} images/s" if rate else ""))


# command -> its handler (argv with the command first); anything else trains
COMMANDS = {"eval": _eval, "push": _push, "sweep": _sweep, "export": _export, "tokenize": _tokenize,
            "import": _import}
