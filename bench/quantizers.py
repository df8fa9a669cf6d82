"""Quantizer forward+backward time and peak memory on CPU, ours vs the textbook version.

    python bench/quantizers.py                      # N = 16,384 tokens, D = 64, K in {512, 2048, 16384}
    python bench/quantizers.py --sizes 512 --repeats 1

Rows, all in one run on the same inputs:
  naive VQ        the textbook formulation: the full (N, K) distance matrix
                  |z|^2 + |e|^2 - 2 z.e, argmin, codebook + commitment losses
  naive VQ+ent    the same plus the entropy loss on the full (N, K) softmax, plain autograd
  vqexplore VQ    chunked search (vqexplore.quantizers.VectorQuantizer), plain / l2 / entropy
  vqexplore SimVQ
  vq-pytorch      vector_quantize_pytorch.VectorQuantize(dim=D, codebook_size=K), its defaults
Time: median wall time of forward+backward over --repeats runs after one warm-up.
Peak memory: the process's peak resident set (VmHWM, reset before each case through
/proc/self/clear_refs) minus the resident set before the case, so inputs are not counted.
"""
from __future__ import annotations

import argparse
import gc
import re
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vqexplore.quantizers import SimVQ, VectorQuantizer


class NaiveVQ(nn.Module):
    """Textbook VQ-VAE: full distance matrix, argmin, losses; optional full-matrix entropy."""

    def __init__(self, k: int, d: int, entropy_reg: float = 0.0, temperature: float = 0.01):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(k, d).uniform_(-1 / k, 1 / k))
        self.entropy_reg, self.temperature = entropy_reg, temperature

    def forward(self, z: torch.Tensor):
        e = self.embedding
        dist = (z ** 2).sum(1, keepdim=True) + (e ** 2).sum(1) - 2 * z @ e.t()
        idx = dist.argmin(1)
        q = e[idx]
        losses = {"codebook": F.mse_loss(q, z.detach()), "commitment": 0.25 * F.mse_loss(z, q.detach())}
        if self.entropy_reg:
            logits = -dist / self.temperature
            p = logits.softmax(1)
            sample = -(p * logits.log_softmax(1)).sum(1).mean()
            avg = p.mean(0)
            losses["entropy"] = self.entropy_reg * (sample + (avg * avg.clamp_min(1e-12).log()).sum())
        return z + (q - z).detach(), losses


class Ours(nn.Module):
    """Our quantizers take (B, D, H, W); feed the N tokens as a (1, D, N, 1) map."""

    def __init__(self, quantizer: nn.Module):
        super().__init__()
        self.q = quantizer

    def forward(self, z):
        out = self.q(z.t().reshape(1, z.shape[1], z.shape[0], 1))
        return out.quantized.reshape(z.shape[1], -1).t(), out.losses


class VQPytorch(nn.Module):
    def __init__(self, k: int, d: int):
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize

        self.q = VectorQuantize(dim=d, codebook_size=k)

    def forward(self, z):
        q, _, loss = self.q(z[None])
        return q[0], {"loss": loss.sum()}


def _status(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+)", text).group(1)) * 1024


def _step(module: nn.Module, z: torch.Tensor) -> None:
    module.zero_grad(set_to_none=True)
    z.grad = None
    q, losses = module(z)
    loss = q.square().mean() + sum(losses.values())
    loss.backward()


def measure(module: nn.Module, z: torch.Tensor, repeats: int) -> tuple[float, float]:
    """(median seconds, peak bytes above the starting resident set) of forward+backward."""
    module.train()
    _step(module, z)  # warm-up
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter
    base = _status("VmRSS")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _step(module, z)
        times.append(time.perf_counter() - start)
    peak = _status("VmHWM") - base
    return statistics.median(times), max(peak, 0)


CASES = {
    # name: (factory(k, d, entropy_reg), reference row for the ratios)
    "naive VQ (full distance matrix)": (lambda k, d, e: NaiveVQ(k, d), None),
    "vqexplore VQ": (lambda k, d, e: Ours(VectorQuantizer(k, d)), "naive VQ (full distance matrix)"),
    "vqexplore VQ + l2": (lambda k, d, e: Ours(VectorQuantizer(k, d, l2_norm=True)), "naive VQ (full distance matrix)"),
    "vqexplore SimVQ": (lambda k, d, e: Ours(SimVQ(k, d)), "naive VQ (full distance matrix)"),
    "vector_quantize_pytorch.VectorQuantize": (lambda k, d, e: VQPytorch(k, d), "naive VQ (full distance matrix)"),
    "naive VQ + entropy (full matrix)": (lambda k, d, e: NaiveVQ(k, d, e), None),
    "vqexplore VQ + entropy": (lambda k, d, e: Ours(VectorQuantizer(k, d, entropy_reg=e)), "naive VQ + entropy (full matrix)"),
}


def worker(case: str, k: int, n: int, d: int, repeats: int, entropy_reg: float) -> None:
    """Measure one case in this (fresh) process and print 'time peak' on stdout."""
    torch.manual_seed(0)
    z = torch.randn(n, d, requires_grad=True)
    module = CASES[case][0](k, d, entropy_reg)
    t, mem = measure(module, z, repeats)
    print(f"RESULT {t} {mem}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 16384])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--entropy-reg", type=float, default=0.1)
    ap.add_argument("--cases", nargs="+", default=list(CASES), help="subset of the rows, by name")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.k, args.tokens, args.dim, args.repeats, args.entropy_reg)

    import subprocess

    n, d = args.tokens, args.dim
    print(f"# forward+backward on CPU ({torch.get_num_threads()} threads), N={n} tokens, D={d}, "
          f"median of {args.repeats}, each case in a fresh process; torch {torch.__version__}")
    print("| K | quantizer | time (ms) | peak memory (MB) | speed-up vs naive | memory / naive |")
    print("|---:|---|---:|---:|---:|---:|")
    for k in args.sizes:
        results: dict[str, tuple[float, float]] = {}
        for case in args.cases:
            ref = CASES[case][1]
            if ref and ref not in results and ref in CASES:
                continue  # a ratio needs its reference row, which runs first in CASES order
            out = subprocess.run(
                [sys.executable, __file__, "--worker", case, "--k", str(k), "--tokens", str(n), "--dim", str(d),
                 "--repeats", str(args.repeats), "--entropy-reg", str(args.entropy_reg)],
                capture_output=True, text=True)
            line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
            if out.returncode or not line:
                print(f"| {k} | {case} | failed: {(out.stderr.strip().splitlines() or ['?'])[-1]} | | | |", flush=True)
                continue
            t, mem = map(float, line[-1].split()[1:])
            results[case] = (t, mem)
            if ref:
                rt, rm = results[ref]
                speed, memr = f"{rt / t:.2f}x", f"{mem / rm:.3f}" if rm > 0 else "-"
                label = case if ref.startswith("naive VQ (") else f"{case} (vs naive + entropy)"
            else:
                speed, memr, label = "1.00x", "1.000", case
            print(f"| {k} | {label} | {t * 1e3:.1f} | {mem / 2**20:.1f} | {speed} | {memr} |", flush=True)


if __name__ == "__main__":
    main()
