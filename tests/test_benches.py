"""The benchmarks the README quotes still run, with the variants it names (tiny sizes: a smoke test of
their wiring, not a measurement)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "train_step.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_train_step_bench_times_every_precision_variant():
    out = _bench("--hidden", "8", "--size", "16", "--batch", "2", "--codebook-size", "16", "--code-dim", "4",
                 "--rounds", "2", "--threads", "1", "--variants", "seed", "trainer", "trainer_bf16", "seed_bf16")
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split("|")[1].strip() for line in out.stdout.splitlines() if line.startswith("| K=16")]
    assert rows == ["K=16 seed", "K=16 trainer", "K=16 trainer bf16", "K=16 seed bf16"], out.stdout


def test_train_step_bench_refuses_seed_variants_for_the_vqgan_stage():
    out = _bench("--stage", "vqgan", "--variants", "bare", "seed_bf16")
    assert out.returncode == 2 and "no seed variants" in out.stderr and "Traceback" not in out.stderr, out.stderr
