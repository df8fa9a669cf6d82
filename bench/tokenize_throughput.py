"""Throughput of ``python -m trainer tokenize`` vs the model's bare encode (same model, same images).

    python bench/tokenize_throughput.py            # the study's model (hidden 256, VQ 16384 x 64), CPU
    python bench/tokenize_throughput.py --images 256 --rounds 2       # quicker
    python bench/tokenize_throughput.py --device cuda --images 20000 --batch 1024 --workers 12   # on a GPU

The images are a folder of JPEG files written once (``--images`` of them, 80-160 px, like a
small ImageNet folder) unless ``--data`` names a source. Variants, interleaved round by round so
that a change in machine load hits them alike:

- ``bare``:     ``model.encode`` on the already decoded (N, 3, S, S) tensor, batch by batch,
  results moved to the CPU. No data loading, no writing: the ceiling.
- ``tokenize``: ``trainer.tokenize.tokenize_dataset`` into a fresh folder: decoding the files
  (DataLoader with ``--workers`` processes), encoding, and writing the memory-mapped array,
  timed from the first batch request to the last row written.

Prints images/s per round (median) and the tokenize/bare ratio (median of the per-round ratios).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trainer.tokenize import tokenize_dataset
from vqexplore import VQModel
from vqexplore.data import make_dataset


def write_imagenet64(root: Path, n: int, side: int = 64, seed: int = 0) -> Path:
    """n images as one Downsampled ImageNet batch file (``train_data_batch_1.npz``: uint8 rows of
    R, G, B planes), the format whose items need no decoding."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    data = rng.integers(0, 256, size=(n, 3 * side * side), dtype=np.uint8)
    np.savez(root / "train_data_batch_1.npz", data=data, labels=np.zeros(n, np.int64))
    return root


def write_folder(root: Path, n: int, seed: int = 0) -> Path:
    """n JPEG files of 80-160 px with smooth colours and edges, in 10 subfolders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = (int(v) for v in rng.integers(80, 161, size=2))
        y, x = np.mgrid[0:h, 0:w] / 160
        f = rng.uniform(1, 8, size=(3, 2))
        img = np.stack([np.sin(2 * np.pi * (f[c, 0] * x + f[c, 1] * y) + c) for c in range(3)], -1)
        img = ((img * 0.5 + 0.5) * 255).astype(np.uint8)
        sub = root / f"class{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(sub / f"{i:06d}.jpg", quality=90)
    return root


@torch.inference_mode()
def bare(model, images: torch.Tensor, batch: int, device: torch.device) -> float:
    start = time.perf_counter()
    for i in range(0, images.shape[0], batch):
        model.encode(images[i:i + batch].to(device, non_blocking=True)).cpu()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images.shape[0] / (time.perf_counter() - start)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", help="checkpoint folder (default: a fresh study model, see --hidden/--codebook)")
    p.add_argument("--data", help="image source (default: generated, see --format)")
    p.add_argument("--format", choices=["jpeg", "imagenet64"], default="jpeg",
                   help="generated data: a folder of JPEG files, or one Downsampled ImageNet batch file")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--codebook", type=int, default=16384)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return p.parse_args()


def main() -> None:
    a = parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    work = Path(tempfile.mkdtemp(prefix="bench-tokenize-"))
    # Downsampled ImageNet files are converted once to memory-mappable .npy in this cache: keep
    # the benchmark's out of the user's.
    # (VQEXPLORE_CACHE: the old name, which vqexplore/data/imagenet64.py still reads.)
    os.environ["VQEXPLORE_CACHE_DIR"] = os.environ["VQEXPLORE_CACHE"] = str(work / "cache")
    try:
        ckpt = Path(a.ckpt) if a.ckpt else work / "model"
        if not a.ckpt:
            torch.manual_seed(0)
            VQModel(quantizer="vq", codebook_size=a.codebook, code_dim=64, hidden_dim=a.hidden).save_pretrained(ckpt)
        if a.data:
            data = a.data
        elif a.format == "jpeg":
            data = str(write_folder(work / "images", a.images))
        else:
            data = str(write_imagenet64(work / "imagenet64", a.images, a.size))
        model = VQModel.from_pretrained(ckpt).to(device).eval()
        ds = make_dataset(data, "train", a.size, in_memory=False)
        n = min(len(ds), a.images)
        images = torch.stack([ds[i] for i in range(n)])
        if device.type == "cuda":
            images = images.pin_memory()
        bare(model, images[:a.batch], a.batch, device)  # warm-up (allocator, kernels)
        rows = run_rounds(a, model, images, ckpt, data, work, device)
        report(a, rows, model, n, device)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_rounds(a, model, images, ckpt: Path, data: str, work: Path, device) -> list[dict]:
    """images/s of both variants in every round, alternating which goes first."""
    rows = []
    for r in range(a.rounds):
        out = work / f"tokens-{r}"
        result = {}
        for name in (("bare", "tokenize") if r % 2 == 0 else ("tokenize", "bare")):
            if name == "bare":
                result[name] = bare(model, images, a.batch, device)
            else:
                info = tokenize_dataset(str(ckpt), data, out, split="train", size=a.size, batch_size=a.batch,
                                        workers=a.workers, device=str(device), max_images=len(images), progress=False)
                result[name] = info["images_per_second"]
                shutil.rmtree(out)
        rows.append(result)
        print(f"round {r + 1}: bare {result['bare']:.1f} img/s, tokenize {result['tokenize']:.1f} img/s, "
              f"ratio {result['tokenize'] / result['bare']:.3f}", file=sys.stderr, flush=True)
    return rows


def report(a, rows: list[dict], model, n: int, device) -> None:
    med = {k: statistics.median(row[k] for row in rows) for k in ("bare", "tokenize")}
    ratio = statistics.median(row["tokenize"] / row["bare"] for row in rows)
    cpu_name = f"CPU, {torch.get_num_threads()} threads"
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name
    source = a.data or ("JPEG files" if a.format == "jpeg" else "a Downsampled ImageNet file")
    print(f"\n{n} images {a.size}x{a.size} from {source}, batch {a.batch}, {a.workers} loader workers, "
          f"hidden {model.config['hidden_dim']}, K={model.codebook_size}, {dev_name}, {a.rounds} rounds (medians)\n")
    print("| variant | images/s | vs bare |")
    print("|---|---:|---:|")
    print(f"| bare `model.encode` (decoded tensors in memory) | {med['bare']:.1f} | 1.000 |")
    ratios = [row["tokenize"] / row["bare"] for row in rows]
    print(f"| `trainer tokenize` (files -> tokens.npy) | {med['tokenize']:.1f} | {ratio:.3f} "
          f"(rounds: {min(ratios):.2f}-{max(ratios):.2f}) |")


if __name__ == "__main__":
    main()
