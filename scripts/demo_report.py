"""The demo set on the held-out photos: a table (docs/demo_set.md) and a reconstruction grid
(docs/demo_grid.png: input | each checkpoint), rendered from the checkpoints themselves.

    python scripts/demo_report.py                       # every checkpoint in checkpoints/
    python scripts/demo_report.py --ckpts checkpoints/vq-4096 checkpoints/vq-4096-restart

PSNR / SSIM: each held-out photo (``photos`` val split, 8 photos never trained on) as the demo
sees an upload in its 64 mode: resized so that its shorter side is 64, centre-cropped to 64 x 64.
Usage: 8 photos at 64 px are only 2,048 tokens, fewer than a 4,096- or 16,384-code codebook; so codebook
usage is counted over the same photos encoded whole at four scales (shorter side 64, 128, 256 and
512 px: 273,184 tokens), the way the demo tokenizes larger uploads. Both are measured on
photos no checkpoint was trained on.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vqexplore
from trainer.runfacts import read_facts
from vqexplore.codebook_metrics import code_counts
from vqexplore.data import center_crop, fit_to_multiple, image_to_tensor, tensor_to_image
from vqexplore.data.corpus import photo_arrays
from vqexplore.data.decode import _resize_shorter
from vqexplore.encoding import usage_stats
from vqexplore.metrics import psnr, ssim, to_unit
from vqexplore.hub import CONFIG_NAME
from vqexplore.runlayout import DEMO_CHECKPOINTS

ROOT = Path(__file__).resolve().parents[1]
USAGE_SCALES = (64, 128, 256, 512)


@torch.no_grad()
def measure(model, photos: list[np.ndarray]) -> dict:
    """PSNR / SSIM in the demo's 64 mode and usage over four scales, on (H, W, 3) uint8 photos."""
    model.eval()
    x = torch.stack([image_to_tensor(center_crop(p, 64)) for p in photos])
    recon = model(x).reconstruction.clamp(-1, 1)
    counts = torch.zeros(model.codebook_size, dtype=torch.long)
    tokens = 0
    for photo in photos:
        for side in USAGE_SCALES:
            img = fit_to_multiple(_resize_shorter(photo, side), 4)
            ids = model.encode(image_to_tensor(img)[None])
            counts += code_counts(ids.flatten(), model.codebook_size)
            tokens += ids.numel()
    stats = usage_stats(counts)
    return {"psnr": float(psnr(to_unit(recon), to_unit(x)).mean()),
            "ssim": float(ssim(to_unit(recon), to_unit(x)).mean()),
            "usage": stats.usage, "used": int((counts > 0).sum()), "tokens": tokens,
            "recon": recon, "inputs": x}


def grid(columns: list[torch.Tensor], scale: int = 3) -> Image.Image:
    """Columns of (N, 3, 64, 64) images in [-1, 1] -> one PNG, rows = photos, nearest-upscaled."""
    rows = [np.concatenate([tensor_to_image(col[i]) for col in columns], axis=1) for i in range(len(columns[0]))]
    img = Image.fromarray(np.concatenate(rows, axis=0))
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpts", nargs="*", help="checkpoint folders (default: every one in checkpoints/)")
    p.add_argument("--out", default=str(ROOT / "docs"), help="folder for demo_set.md and demo_grid.png")
    a = p.parse_args(argv)
    folders = [Path(c) for c in a.ckpts] if a.ckpts else sorted(
        d for d in DEMO_CHECKPOINTS.iterdir() if (d / CONFIG_NAME).is_file())
    names, photos = zip(*photo_arrays("val"))
    lines = ["| checkpoint | quantizer | steps trained | PSNR (64 mode) | SSIM | codes used on the held-out photos | "
             "usage |",
             "|---|---|---:|---:|---:|---:|---:|"]
    columns = None
    for folder in folders:
        model = vqexplore.load(folder)
        m = measure(model, list(photos))
        columns = columns or [m["inputs"]]
        columns.append(m["recon"])
        trained = _steps(folder)
        summary = vqexplore.describe.config_summary(model.config)
        if (adversarial := read_facts(folder).get("adversarial")):  # the VQGAN stage (trainer export)
            summary += f" · {adversarial}"
        lines.append(f"| {folder.name} | {summary} | {trained} | "
                     f"{m['psnr']:.2f} dB | {m['ssim']:.4f} | {m['used']:,} of {model.codebook_size:,} "
                     f"({m['tokens']:,} tokens) | {m['usage']:.1%} |")
        print(lines[-1], flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    header = (f"Held-out photos: {', '.join(names)}. Columns of docs/demo_grid.png: input, then "
              f"{', '.join(f.name for f in folders)}.\n\n")
    (out / "demo_set.md").write_text(header + "\n".join(lines) + "\n")
    grid(columns).save(out / "demo_grid.png")
    print(f"wrote {out / 'demo_set.md'} and {out / 'demo_grid.png'}")
    return 0


def _steps(folder: Path) -> str:
    """Training steps of the checkpoint, from its training.json ("?" when it has none)."""
    facts = read_facts(folder)
    step, start = facts.get("step"), facts.get("init_from")
    if not isinstance(step, int):
        return "?"
    return f"{step:,} after {Path(start).name}" if start else f"{step:,}"


if __name__ == "__main__":
    raise SystemExit(main())
