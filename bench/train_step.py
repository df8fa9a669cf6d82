"""Training throughput of the trainer's step vs a bare PyTorch loop (same model, same run).

    python bench/train_step.py                 # the study's model: hidden 256, VQ 16384 x 64, batch 32, 64x64, CPU
    python bench/train_step.py --rounds 3 --steps 2 --hidden 64   # quicker
    python bench/train_step.py --device cuda --bf16 --batch 256 --steps 20   # on a GPU
    python bench/train_step.py --stage vqgan --batch 1 --rounds 3    # the VQGAN stage: LlamaGen VQ-16 at 256 px
    python bench/train_step.py --stage vqgan --device cuda --bf16 --batch 128 --steps 5   # ... at its batch, GPU

Variants, interleaved round by round so that a change in machine load hits them alike:

- ``bare``:    model(x); mse + sum(quantizer losses); zero_grad; backward; Adam step. Nothing else.
- ``trainer``: ``trainer.step.train_step`` plus the per-step bookkeeping of the training loop
  (running loss sums and code counts on the device, the NaN check that the loop does on CPU).
- ``... channels_last`` (``--channels-last``): the same with the model and the images in
  channels-last memory format.

``--stage vqgan``: one step of the VQGAN stage, generator and discriminator, of the LlamaGen VQ-16
configuration (VQGAN ch 128, ch_mult [1,1,2,2,4], 2 res blocks, attention at 16x16, z 256; VQ 16,384 x 8
with l2-normalised codes) at 256x256 with LPIPS (VGG16 trunk, random weights: the same work as the
real ones) x 1.0 and a PatchGAN (width 64, 3 layers) hinge loss x 0.5, gradient clipping 1.0, as
configs/imagenet256/vqgan-llamagen.yaml after its step 20,000:

- ``bare``:    a hand-written loop of the same modules: generator forward, MSE + LPIPS + quantizer
  losses + 0.5 * hinge G loss through the discriminator (its weights switched off), backward, clip,
  Adam step; then the discriminator's hinge loss on real and detached reconstructed images, backward,
  clip, Adam step.
- ``trainer``: ``trainer.step.vqgan_train_step`` plus the loop's per-step bookkeeping.

Each round runs every variant for ``--steps`` steps, back to back, alternating which goes first.
Prints images/s (median over rounds) and the trainer/bare ratio as the median of the per-round
ratios: variants timed seconds apart see the same machine load, which on a shared machine drifts
far more between rounds than within one. Both variants start from the same weights; they train
separate copies.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
import torch.nn.functional as F


from trainer.config import LossConfig
from trainer.step import GANStage, Window, train_step, vqgan_train_step
from vqexplore import VQModel


AUTOCAST: torch.dtype | None = None  # --bf16


def bare_step(model, optimizer, x):
    with torch.autocast(x.device.type, dtype=AUTOCAST, enabled=AUTOCAST is not None):
        out = model(x)
        loss = F.mse_loss(out.reconstruction.float(), x) + sum(out.losses.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def make_trainer_step(model, device):
    window = Window(model.codebook_size, device)
    check_every_step = device.type == "cpu"  # as the loop: a free sync on CPU, at log steps on GPU

    def step(model, optimizer, x):
        out = train_step(model, optimizer, x, AUTOCAST)
        window.add(out, x.shape[0])
        if check_every_step and not window.finite():
            raise RuntimeError("non-finite loss")

    return step


# --stage vqgan: the LlamaGen row's loss (configs/imagenet256/vqgan-llamagen.yaml), adversarial stage on.
VQGAN_LOSS = LossConfig(recon="mse", lpips_weight=1.0, adv_weight=0.5, disc_start=0, disc_loss="hinge",
                        adaptive_weight=False, disc_lr=1e-4, disc_betas=[0.9, 0.95])
GRAD_CLIP = 1.0


def bare_vqgan_step(parts, optimizer, x):
    perceptual, disc, disc_opt = parts
    model = parts.model
    with torch.autocast(x.device.type, dtype=AUTOCAST, enabled=AUTOCAST is not None):
        out = model(x)
        for p in disc.parameters():
            p.requires_grad_(False)
        g_loss = -disc(out.reconstruction).float().mean()
        for p in disc.parameters():
            p.requires_grad_(True)
        loss = (F.mse_loss(out.reconstruction.float(), x) + perceptual(out.reconstruction, x)
                + sum(out.losses.values()) + 0.5 * g_loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    with torch.autocast(x.device.type, dtype=AUTOCAST, enabled=AUTOCAST is not None):
        real, fake = disc(x).float(), disc(out.reconstruction.detach()).float()
        d_loss = 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
    disc_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    torch.nn.utils.clip_grad_norm_(disc.parameters(), GRAD_CLIP)
    disc_opt.step()


class _Parts(tuple):
    """(perceptual, discriminator, its optimiser), and the generator as ``.model``."""

    model: torch.nn.Module


def make_trainer_vqgan_step(model, stage: GANStage, device):
    window = Window(model.codebook_size, device)
    check_every_step = device.type == "cpu"

    def step(parts, optimizer, x):
        out = vqgan_train_step(parts.model, optimizer, x, stage, True, AUTOCAST, GRAD_CLIP)
        window.add(out, x.shape[0])
        if check_every_step and not window.finite():
            raise RuntimeError("non-finite loss")

    return step


def vqgan_variants(a, device) -> tuple[dict, str]:
    """The bare and trainer variants of the VQGAN stage, each with its own copies of the same
    generator, discriminator and (frozen) LPIPS network."""
    from vqexplore.gan import PatchDiscriminator, PerceptualLoss

    torch.manual_seed(0)
    base = VQModel(arch="vqgan", quantizer="vq", codebook_size=16384, code_dim=8, l2_norm=True,
                   resolution=a.size).to(device)
    base_disc = PatchDiscriminator(3, 64, 3).to(device)
    perceptual = PerceptualLoss(pretrained_backbone=False).to(device)
    x = torch.rand(a.batch, 3, a.size, a.size, device=device) * 2 - 1
    variants = {}
    for kind in ("bare", "trainer"):
        model, disc = copy.deepcopy(base), copy.deepcopy(base_disc)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
        disc_opt = torch.optim.Adam(disc.parameters(), lr=1e-4, betas=(0.9, 0.95))
        parts = _Parts((perceptual, disc, disc_opt))
        parts.model = model
        if kind == "bare":
            fn = bare_vqgan_step
        else:
            stage = GANStage(VQGAN_LOSS, perceptual, disc, disc, disc_opt)
            fn = make_trainer_vqgan_step(model, stage, device)
        variants[kind] = (parts, opt, fn, x)
    n_params = sum(p.numel() for p in base.parameters())
    n_disc = sum(p.numel() for p in base_disc.parameters())
    title = (f"VQGAN stage: LlamaGen VQ-16 ({n_params:,} parameters) + PatchGAN ({n_disc:,}) + LPIPS-VGG (random "
             f"weights), MSE + LPIPS + 0.5 hinge, clip 1.0, batch {a.batch} at {a.size}x{a.size}, "
             f"{device}{' bf16' if a.bf16 else ' fp32'}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    return variants, title


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--codebook-size", type=int, default=16384)
    p.add_argument("--code-dim", type=int, default=64)
    p.add_argument("--rounds", type=int, default=9, help="interleaved rounds (the first is warm-up)")
    p.add_argument("--steps", type=int, default=1, help="timed steps per variant per round")
    p.add_argument("--channels-last", action="store_true", help="also time channels-last variants")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (as train.precision=bf16)")
    p.add_argument("--stage", choices=("mse", "vqgan"), default="mse",
                   help="mse: the study's SimpleCNN step; vqgan: the VQGAN stage of LlamaGen VQ-16 at --size 256")
    a = p.parse_args()
    if a.stage == "vqgan" and "--size" not in sys.argv:
        a.size = 256
    return a


def main() -> None:
    a = parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    global AUTOCAST
    AUTOCAST = torch.bfloat16 if a.bf16 else None
    device = torch.device(a.device)
    if a.stage == "vqgan":
        variants, title = vqgan_variants(a, device)
        print(title)
        start = time.perf_counter()
        times = run_rounds(variants, a.rounds, a.steps, device)
        report(times, a)
        print(f"total bench time {time.perf_counter() - start:.0f} s; rounds {a.rounds} (first = warm-up), "
              f"{a.steps} timed steps per variant per round")
        return

    torch.manual_seed(0)
    base = VQModel(quantizer="vq", codebook_size=a.codebook_size, code_dim=a.code_dim, hidden_dim=a.hidden).to(device)
    x = torch.rand(a.batch, 3, a.size, a.size, device=device) * 2 - 1
    variants = {}
    formats = [("", torch.contiguous_format)] + ([(" channels_last", torch.channels_last)] if a.channels_last else [])
    for suffix, fmt in formats:
        for kind in ("bare", "trainer"):
            model = copy.deepcopy(base).to(memory_format=fmt)
            opt = torch.optim.Adam(model.parameters(), lr=4e-4)
            fn = bare_step if kind == "bare" else make_trainer_step(model, device)
            variants[kind + suffix] = (model, opt, fn, x.contiguous(memory_format=fmt))

    n_params = sum(p.numel() for p in base.parameters())
    print(f"SimpleCNN hidden {a.hidden}, VQ {a.codebook_size} x {a.code_dim} ({n_params:,} parameters), "
          f"batch {a.batch} at {a.size}x{a.size}, {device}{' bf16' if a.bf16 else ' fp32'}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    start = time.perf_counter()
    times = run_rounds(variants, a.rounds, a.steps, device)
    report(times, a)
    print(f"total bench time {time.perf_counter() - start:.0f} s; rounds {a.rounds} (first = warm-up), "
          f"{a.steps} timed steps per variant per round")


def run_rounds(variants: dict, rounds: int, steps: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per step of every variant in every round but the first (warm-up: allocator, oneDNN
    primitive caches), the variants alternating which goes first."""
    times = {name: [] for name in variants}
    start = time.perf_counter()
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            model, opt, fn, xx = variants[name]
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps if r else 1):
                fn(model, opt, xx)
            _sync(device)
            if r:
                times[name].append((time.perf_counter() - t0) / steps)
        print(f"  round {r + 1}/{rounds} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    return times


def report(times: dict[str, list[float]], a: argparse.Namespace) -> None:
    ips = {name: a.batch / statistics.median(ts) for name, ts in times.items()}

    def paired(name: str, ref: str) -> str:
        ratios = sorted(r / n for n, r in zip(times[name], times[ref]))
        return f"{statistics.median(ratios):.3f}x (rounds: {ratios[0]:.2f}-{ratios[-1]:.2f})"

    print()
    print("| variant | images/s | s/step | vs bare, same format (median of per-round ratios) |")
    print("|---|---:|---:|---:|")
    for name in times:
        ref = "bare" + (" channels_last" if name.endswith("channels_last") else "")
        print(f"| {name} | {ips[name]:.2f} | {a.batch / ips[name]:.2f} | {paired(name, ref)} |")
    if a.channels_last:
        print(f"\nchannels_last vs contiguous: trainer {paired('trainer channels_last', 'trainer')}, "
              f"bare {paired('bare channels_last', 'bare')}")


if __name__ == "__main__":
    main()
