"""Quantizer forward+backward time and peak memory on CPU, ours vs the textbook version.

    python bench/quantizers.py                      # N = 16,384 tokens, D = 64, K in {512, 2048, 16384}
    python bench/quantizers.py --sizes 512 --repeats 1
    python bench/quantizers.py --sizes 16384 --rounds 2 --baseline main --cases "vqexplore VQ" \
        "vqexplore LFQ" "vqexplore LFQ, factorised entropy (groups of ceil(D/2) bits)" "vqexplore IBQ"

Rows, all in one run on the same inputs:
  naive VQ        the textbook formulation: the full (N, K) distance matrix
                  |z|^2 + |e|^2 - 2 z.e, argmin, codebook + commitment losses
  naive VQ+ent    the same plus the entropy loss on the full (N, K) softmax, plain autograd
  vqexplore VQ    chunked search (vqexplore.quantizers.VectorQuantizer), plain / l2 / entropy
  vqexplore SimVQ
  vq-pytorch      vector_quantize_pytorch.VectorQuantize(dim=D, codebook_size=K), its defaults
  VQ remedies     dead-code restart with a threshold that restarts every code at every step (the
                  worst case; the worker also times the restart alone), k-means init (its one-time
                  first step: 10 Lloyd iterations on the batch), rotation trick
  LFQ, BSQ        vqexplore (chunked entropy terms) vs vector_quantize_pytorch.LFQ (full N x K
                  softmax); their tokens have D = log2(K) channels, not --dim; and the factorised
                  entropy (entropy_group_bits = ceil(D / 2): two groups), against plain VQ
  IBQ             vqexplore (argmax in the forward, the softmax over all codes in the backward, in
                  chunks) vs the official formulation with the full (N, K) softmax and one-hot
--baseline REV also times the vqexplore rows asked for with the package as it is at git revision
REV (``git archive`` into a temporary folder, first on the worker's PYTHONPATH): rows "... @REV".
--rounds R runs the whole list of cases R times in turn (each case a fresh process each round), so
that the machine's load hits every case alike; the table gives each case's median over rounds.
Time: median wall time of forward+backward over --repeats runs after one warm-up.
Peak memory: the process's peak resident set (VmHWM, reset before each case through
/proc/self/clear_refs) minus the resident set before the case, so inputs are not counted.
"""
from __future__ import annotations

import argparse
import gc
import math
import re
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vqexplore.quantizers import BSQ, IBQ, LFQ, SimVQ, VectorQuantizer


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


class NaiveIBQ(nn.Module):
    """IBQ as the official code writes it: full (N, K) logits, softmax, one-hot, plain autograd."""

    def __init__(self, k: int, d: int, beta: float = 0.25):
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(k, d))
        self.beta = beta

    def forward(self, z: torch.Tensor):
        e = self.embedding
        soft = (z @ e.t()).softmax(1)
        hard = F.one_hot(soft.argmax(1), e.shape[0]).to(z.dtype)
        q = (hard - soft.detach() + soft) @ e
        chosen = hard @ e
        losses = {"quantization": F.mse_loss(q, z), "commitment": self.beta * F.mse_loss(z, chosen.detach()),
                  "codebook": F.mse_loss(chosen, z.detach())}
        return q, losses


class Ours(nn.Module):
    """Our quantizers take (B, D, H, W); feed the N tokens as a (1, D, N, 1) map."""

    def __init__(self, quantizer: nn.Module):
        super().__init__()
        self.q = quantizer

    def forward(self, z):
        out = self.q(z.t().reshape(1, z.shape[1], z.shape[0], 1))
        return out.quantized.reshape(z.shape[1], -1).t(), out.losses


class LFQPytorch(nn.Module):
    """vector_quantize_pytorch.LFQ with vqexplore's LFQ / BSQ weights, tokens (N, log2 K)."""

    def __init__(self, k: int, spherical: bool):
        super().__init__()
        from vector_quantize_pytorch import LFQ as ReferenceLFQ

        self.q = ReferenceLFQ(dim=k.bit_length() - 1, codebook_size=k, spherical=spherical,
                              entropy_loss_weight=0.1, commitment_loss_weight=0.25)

    def forward(self, z):
        q, _, loss = self.q(z[None])
        return q[0], {"loss": loss}


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


def _restart_every_step(k: int, d: int) -> nn.Module:
    # Every code's usage EMA (decay 0.4) falls below a threshold no code can reach one step after
    # its restart (grace 2T * 0.4 < T), so all min(K, N) dead codes are restarted at every step.
    return Ours(VectorQuantizer(k, d, dead_code_threshold=1e9, ema_decay=0.4))


_LOG2 = lambda k: k.bit_length() - 1  # noqa: E731  LFQ / BSQ tokens have log2(K) channels
_HALF = lambda k: (_LOG2(k) + 1) // 2  # noqa: E731  factorised entropy: two groups of bits

CASES = {
    # name: (factory(k, d, entropy_reg), reference row for the ratios[, token dim from K])
    "naive VQ (full distance matrix)": (lambda k, d, e: NaiveVQ(k, d), None),
    "vqexplore VQ": (lambda k, d, e: Ours(VectorQuantizer(k, d)), "naive VQ (full distance matrix)"),
    "vqexplore VQ + l2": (lambda k, d, e: Ours(VectorQuantizer(k, d, l2_norm=True)), "naive VQ (full distance matrix)"),
    "vqexplore SimVQ": (lambda k, d, e: Ours(SimVQ(k, d)), "naive VQ (full distance matrix)"),
    "vector_quantize_pytorch.VectorQuantize": (lambda k, d, e: VQPytorch(k, d), "naive VQ (full distance matrix)"),
    "naive VQ + entropy (full matrix)": (lambda k, d, e: NaiveVQ(k, d, e), None),
    "vqexplore VQ + entropy": (lambda k, d, e: Ours(VectorQuantizer(k, d, entropy_reg=e)),
                               "naive VQ + entropy (full matrix)"),
    "vqexplore VQ + dead-code restart (every code, every step)": (lambda k, d, e: _restart_every_step(k, d),
                                                                  "vqexplore VQ"),
    "vqexplore VQ + kmeans_init (its first step, once)": (
        lambda k, d, e: Ours(VectorQuantizer(k, d, kmeans_init=True)), "vqexplore VQ"),
    "vqexplore VQ + rotation_trick": (lambda k, d, e: Ours(VectorQuantizer(k, d, rotation_trick=True)), "vqexplore VQ"),
    "vector_quantize_pytorch.LFQ": (lambda k, d, e: LFQPytorch(k, False), None, _LOG2),
    "vqexplore LFQ": (lambda k, d, e: Ours(LFQ(k)), "vector_quantize_pytorch.LFQ", _LOG2),
    "vector_quantize_pytorch.LFQ(spherical=True)": (lambda k, d, e: LFQPytorch(k, True), None, _LOG2),
    "vqexplore BSQ": (lambda k, d, e: Ours(BSQ(k)), "vector_quantize_pytorch.LFQ(spherical=True)", _LOG2),
    "vqexplore LFQ, factorised entropy (groups of ceil(D/2) bits)": (
        lambda k, d, e: Ours(LFQ(k, entropy_group_bits=_HALF(k))), "vqexplore VQ", _LOG2),
    "vqexplore BSQ, factorised entropy (groups of ceil(D/2) bits)": (
        lambda k, d, e: Ours(BSQ(k, entropy_group_bits=_HALF(k))), "vqexplore VQ", _LOG2),
    "naive IBQ (full softmax and one-hot)": (lambda k, d, e: NaiveIBQ(k, d), None),
    "vqexplore IBQ": (lambda k, d, e: Ours(IBQ(k, d)), "naive IBQ (full softmax and one-hot)"),
}
# Rows whose time is also given as a multiple of plain VQ's (the "within 2x of VQ").
VERSUS_VQ = ("vqexplore LFQ", "vqexplore BSQ", "vqexplore IBQ")


def measure_first_step(module: nn.Module, z: torch.Tensor, repeats: int) -> tuple[float, float]:
    """k-means init: (median seconds, peak bytes) of the first training step, which runs the
    k-means; the flag is reset before each repeat so that every timed step includes it."""
    module.train()
    vq = module.q
    vq.kmeans_done.fill_(True)
    _step(module, z)  # warm-up of everything but the k-means
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    base = _status("VmRSS")
    times = []
    for _ in range(repeats):
        vq.kmeans_done.fill_(False)
        start = time.perf_counter()
        _step(module, z)
        times.append(time.perf_counter() - start)
        assert bool(vq.kmeans_done)
    return statistics.median(times), max(_status("VmHWM") - base, 0)


def restart_alone(module: nn.Module, z: torch.Tensor, repeats: int) -> tuple[float, float]:
    """(median seconds of one ``_restart_dead_codes`` call alone, codes it restarted per call)."""
    vq = module.q
    tokens = z.detach()
    times, restarted = [], []
    for _ in range(repeats):
        vq.usage_ema.zero_()  # what the measured steps saw: every code below the threshold
        before = vq.embedding.detach().clone()
        start = time.perf_counter()
        vq._restart_dead_codes(tokens)
        times.append(time.perf_counter() - start)
        restarted.append(int((vq.embedding.detach() != before).any(1).sum()))
    return statistics.median(times), statistics.median(restarted)


def worker(case: str, k: int, n: int, d: int, repeats: int, entropy_reg: float) -> None:
    """Measure one case in this (fresh) process and print 'time peak [extra]' on stdout."""
    torch.manual_seed(0)
    entry = CASES[case]
    d = entry[2](k) if len(entry) > 2 else d
    z = torch.randn(n, d, requires_grad=True)
    module = entry[0](k, d, entropy_reg)
    if "kmeans_init" in case:
        t, mem = measure_first_step(module, z, repeats)
    else:
        t, mem = measure(module, z, repeats)
    extra = ""
    if "dead-code restart" in case:
        before = module.q.embedding.detach().clone()
        _step(module, z)  # one more step: how many codes does a step restart?
        per_step = int((module.q.embedding.detach() != before).any(1).sum())
        # Plain and restarting steps interleaved in this process, so that the machine's load
        # (other processes come and go) hits both alike.
        plain = Ours(VectorQuantizer(k, d)).train()
        _step(plain, z)
        plain_times, restart_times = [], []
        for _ in range(repeats):
            for mod, times in ((plain, plain_times), (module, restart_times)):
                start = time.perf_counter()
                _step(mod, z)
                times.append(time.perf_counter() - start)
        alone, restarted = restart_alone(module, z, repeats)
        # each pair ran back to back under the same load: the median of the pairs' ratios
        ratio = statistics.median(r / p for p, r in zip(plain_times, restart_times))
        extra = f" {alone} {per_step} {statistics.median(plain_times)} {statistics.median(restart_times)} {ratio}"
    import vqexplore

    print(f"PACKAGE {Path(vqexplore.__file__).resolve().parent}")
    print(f"RESULT {t} {mem}{extra}")


def _baseline_package(rev: str, dest: Path) -> Path:
    """vqexplore/ as it is at git revision ``rev``, extracted under ``dest``; returns ``dest``."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(root), "archive", rev, "vqexplore"], capture_output=True)
    if archive.returncode:
        sys.exit(f"error: --baseline {rev}: {archive.stderr.decode().strip() or 'git archive failed'}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def _run_case(case: str, k: int, args, package: Path | None) -> tuple[list[float] | None, str]:
    """One fresh worker process: ([time, peak, extra...] or None, error or package path)."""
    import os
    import subprocess

    env = dict(os.environ)
    if package is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(package)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    out = subprocess.run(
        [sys.executable, __file__, "--worker", case, "--k", str(k), "--tokens", str(args.tokens), "--dim",
         str(args.dim), "--repeats", str(args.repeats), "--entropy-reg", str(args.entropy_reg)],
        capture_output=True, text=True, env=env)
    line = [s for s in out.stdout.splitlines() if s.startswith("RESULT ")]
    where = [s.split(" ", 1)[1] for s in out.stdout.splitlines() if s.startswith("PACKAGE ")]
    if out.returncode or not line:
        return None, (out.stderr.strip().splitlines() or ["?"])[-1]
    if package is not None and not (where and Path(where[0]).is_relative_to(package)):
        return None, f"the worker imported vqexplore from {where[0] if where else '?'}, not the baseline {package}"
    return list(map(float, line[-1].split()[1:])), where[0] if where else ""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 16384])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1, help="run the whole list of cases this many times in turn")
    ap.add_argument("--entropy-reg", type=float, default=0.1)
    ap.add_argument("--cases", nargs="+", default=list(CASES), help="subset of the rows, by name")
    ap.add_argument("--baseline", metavar="REV", help="also time the vqexplore rows asked for at this git revision")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.k, args.tokens, args.dim, args.repeats, args.entropy_reg)
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        sys.exit(f"error: unknown case {unknown[0]!r}; choose from: {', '.join(map(repr, CASES))}")

    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="bench-baseline-")
    package = _baseline_package(args.baseline, Path(tmp.name)) if args.baseline else None
    # (row label, case, package or None); a baseline row follows its case
    runs = []
    for case in args.cases:
        runs.append((case, case, None))
        if package is not None and case.startswith("vqexplore ") and "factorised" not in case:
            runs.append((f"{case} @{args.baseline}", case, package))

    n, d = args.tokens, args.dim
    print(f"# forward+backward on CPU ({torch.get_num_threads()} threads), N={n} tokens, D={d}, "
          f"median of {args.repeats}" + (f", median over {args.rounds} rounds" if args.rounds > 1 else "")
          + f", each case in a fresh process; torch {torch.__version__}"
          + (f"; @{args.baseline}: vqexplore/ at {args.baseline}" if args.baseline else ""))
    print("| K | quantizer | time (ms) | peak memory (MB) | speed-up vs reference | memory / reference |")
    print("|---:|---|---:|---:|---:|---:|")
    notes: list[str] = []
    for k in args.sizes:
        samples: dict[str, list[list[float]]] = {label: [] for label, _, _ in runs}
        errors: dict[str, str] = {}
        for _ in range(args.rounds):
            for label, case, pkg in runs:
                values, info = _run_case(case, k, args, pkg)
                if values is None:
                    errors[label] = info
                else:
                    samples[label].append(values)
        results: dict[str, tuple[float, float]] = {}
        for label, case, pkg in runs:
            if not samples[label]:
                print(f"| {k} | {label} | failed: {errors.get(label, '?')} | | | |", flush=True)
                continue
            t = statistics.median(v[0] for v in samples[label])
            mem = statistics.median(v[1] for v in samples[label])
            extra = samples[label][-1][2:]
            results[label] = (t, mem)
            ref = CASES[case][1]  # runs first in CASES order; absent when it failed or was not asked for
            if ref and pkg is not None and f"{ref} @{args.baseline}" in samples:
                ref = f"{ref} @{args.baseline}"
            if ref:
                rt, rm = results.get(ref, (math.nan, 0.0))
                speed = f"{rt / t:.2f}x" if ref in results else "-"
                memr = f"{mem / rm:.3f}" if rm > 0 else "-"
                label_out = label if ref.startswith("naive VQ (") else f"{label} (vs {ref})"
            else:
                speed, memr, label_out = "1.00x", "1.000", label
            if len(CASES[case]) > 2:
                label_out += f", D={CASES[case][2](k)}"
            print(f"| {k} | {label_out} | {t * 1e3:.1f} | {mem / 2**20:.1f} | {speed} | {memr} |", flush=True)
            if extra:
                alone, per_step, plain_t, restart_t, ratio = extra
                notes.append(f"{case}, K={k}: each step restarted {per_step:.0f} codes. Plain and restarting steps "
                             f"interleaved in one process, {args.repeats} pairs: medians {plain_t * 1e3:.1f} ms and "
                             f"{restart_t * 1e3:.1f} ms, median ratio within a pair {100 * (ratio - 1):+.1f}%; the "
                             f"restart alone {alone * 1e3:.1f} ms = {100 * alone / plain_t:.2f}% of the plain step.")
        if "vqexplore VQ" in results:
            vq = results["vqexplore VQ"][0]
            versus = [f"{label} {results[label][0] / vq:.2f}x" for label, case, _ in runs
                      if case.startswith(VERSUS_VQ) and label in results]
            if versus:
                notes.append(f"K={k}, time as a multiple of vqexplore VQ's ({vq * 1e3:.1f} ms): " + "; ".join(versus))
        if package is not None:
            for label, case, pkg in runs:
                old = f"{label} @{args.baseline}"
                if pkg is None and label in results and old in results:
                    # per round, both measured minutes apart under the same load: the median of the ratios
                    ratios = [a[0] / b[0] for a, b in zip(samples[label], samples[old])]
                    notes.append(f"K={k}, {label}: {results[label][0] * 1e3:.1f} ms now, "
                                 f"{results[old][0] * 1e3:.1f} ms at {args.baseline}; median ratio now / "
                                 f"{args.baseline} over {len(ratios)} round(s) {statistics.median(ratios):.2f}")
    for note in notes:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
