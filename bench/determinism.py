"""Do two identical training runs give identical weights, and does a resume continue bit for bit?

    python bench/determinism.py                                  # CPU, 2 threads, 100 steps
    python bench/determinism.py --device cuda --steps 300        # GPU: default kernels vs train.deterministic=true

For each mode, runs ``configs/cpu/default.yaml`` (``--steps`` steps) twice, and once more stopped
halfway and resumed with ``--resume``; prints the largest weight difference between the two runs
and between the resumed run and the first one (0 = bit-identical), and the median images/s of the
first run (from its metrics.jsonl). Modes: ``default`` (the trainer as configured; on CUDA cuDNN
benchmarks and picks kernels) and ``deterministic`` (``train.deterministic=true``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file

from vqexplore.hub import WEIGHTS_NAME
from vqexplore.runlayout import RunLayout

ROOT = Path(__file__).resolve().parents[1]


def train(out: Path, name: str, args, *extra: str) -> None:
    cmd = [sys.executable, "-m", "trainer", "--cfg", str(ROOT / "configs" / "cpu" / "default.yaml"),
           f"out_dir={out}", f"name={name}", f"train.device={args.device}", f"train.threads={args.threads}",
           f"train.ckpt_every={args.steps // 2}", "train.val_every=0", f"train.log_every={max(1, args.steps // 10)}",
           *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads))
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")


def weights(run: Path, step: int) -> dict:
    return load_file(str(RunLayout(run).checkpoint(step) / WEIGHTS_NAME))


def max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def images_per_s(run: Path) -> float:
    rows = [json.loads(line) for line in RunLayout(run).metrics.read_text().splitlines() if line.strip()]
    rates = [r["images_per_s"] for r in rows if r.get("split") == "train" and "images_per_s" in r]
    return statistics.median(rates[1:] or rates)  # the first window holds the warm-up


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="vqexplore-determinism-"))
    print(f"# configs/cpu/default.yaml, {args.steps} steps, device {args.device}, {args.threads} CPU thread(s)")
    print("| mode | max abs diff, two runs | max abs diff, resumed at half vs uninterrupted | images/s |")
    print("|---|---:|---:|---:|")
    for mode, extra in (("default", []), ("deterministic", ["train.deterministic=true"])):
        for name in ("a", "b"):
            train(out, f"{mode}-{name}", args, f"train.steps={args.steps}", *extra)
        train(out, f"{mode}-r", args, f"train.steps={args.steps // 2}", *extra)
        train(out, f"{mode}-r", args, f"train.steps={args.steps}", "--resume", *extra)
        a = weights(out / f"{mode}-a", args.steps)
        print(f"| {mode} | {max_diff(a, weights(out / f'{mode}-b', args.steps)):.3g} "
              f"| {max_diff(a, weights(out / f'{mode}-r', args.steps)):.3g} "
              f"| {images_per_s(out / f'{mode}-a'):,.0f} |", flush=True)


if __name__ == "__main__":
    main()
