"""The demo set on the held-out photos: a table (docs/demo_set.md) and a reconstruction grid
(docs/demo_grid.png: input | each checkpoint), rendered from the checkpoints themselves.

    python scripts/demo_report.py                       # every checkpoint in checkpoints/
    python scripts/demo_report.py --ckpts checkpoints/vq-4096 checkpoints/vq-4096-restart

Every number is measured under one evaluation protocol, ``Protocol.heldout_photos()``
(``vqexplore.protocol``; the dashboard's default and what ``trainer eval`` uses for these checkpoints):
each of the 8 held-out photos of the photo corpus (never trained on) as the demo sees an upload in its 64
mode, resized so that its shorter side is 64 and centre-cropped, for PSNR / SSIM; codebook usage counted
over the same photos encoded whole at four scales (shorter side 64, 128, 256 and 512 px: 273,184 tokens),
since 8 photos at 64 px are only 2,048 tokens, fewer than a 4,096-code codebook has codes.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vqexplore
from trainer.runfacts import read_facts
from vqexplore.data import photo_arrays, tensor_to_image
from vqexplore.hub import CONFIG_NAME
from vqexplore.protocol import Protocol, cached_evaluation
from vqexplore.runlayout import DEMO_CHECKPOINTS

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def measure(folder: Path, model, protocol: Protocol) -> dict:
    """The protocol's numbers (``cached_evaluation``: computed once per weights and protocol) and the
    reconstructions of its images for the grid."""
    result = cached_evaluation(folder, model, protocol)
    model.eval()
    x = protocol.images()
    recon = model(x).reconstruction.clamp(-1, 1)
    m = result.metrics
    return {"psnr": m["psnr"], "ssim": m["ssim"], "usage": m["usage"], "used": int((result.counts > 0).sum()),
            "tokens": m["usage_tokens"], "bpp": m["bits_per_pixel_entropy"], "recon": recon, "inputs": x}


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
    protocol = Protocol.heldout_photos()
    names = [n for n, _ in photo_arrays("val")]
    lines = ["| checkpoint | quantizer | steps trained | PSNR (64 mode) | SSIM | codes used on the held-out photos | "
             "usage | bits per pixel (entropy) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    columns = None
    for folder in folders:
        model = vqexplore.load(folder)
        m = measure(folder, model, protocol)
        columns = columns or [m["inputs"]]
        columns.append(m["recon"])
        trained = _steps(folder)
        summary = vqexplore.describe.config_summary(model.config)
        if (adversarial := read_facts(folder).get("adversarial")):  # the VQGAN stage (trainer export)
            summary += f" · {adversarial}"
        lines.append(f"| {folder.name} | {summary} | {trained} | "
                     f"{m['psnr']:.2f} dB | {m['ssim']:.4f} | {m['used']:,} of {model.codebook_size:,} "
                     f"({m['tokens']:,} tokens) | {m['usage']:.1%} | {m['bpp']:.3f} |")
        print(lines[-1], flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    header = (f"Protocol: {protocol.describe()}.\n\nHeld-out photos: {', '.join(names)}. "
              f"Columns of docs/demo_grid.png: input, then "
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
