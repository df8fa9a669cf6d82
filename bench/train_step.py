"""Training throughput of vqexplore's step against the study repository's own modules, eager and
compiled (same model, same weights, same batch, one process).

    python bench/train_step.py                 # the study's model (hidden 256, VQ 64-d), K = 512 and 16,384,
                                               # batch 32 at 64x64, CPU: seed, trainer, trainer compiled
    python bench/train_step.py --codebook-size 512 --rounds 5 --hidden 64   # quicker
    python bench/train_step.py --codebook-size 512 --variants seed trainer trainer_bf16 seed_bf16   # bf16 on CPU
    python bench/train_step.py --device cuda --bf16 --batch 256 --steps 20   # on a GPU
    python bench/train_step.py --stage vqgan --batch 1 --rounds 3    # the VQGAN stage: LlamaGen VQ-16 at 256 px
    python bench/train_step.py --stage vqgan --device cuda --bf16 --batch 128 --steps 5   # ... at its batch, GPU

Variants (``--variants``; default ``seed trainer compiled``), for every codebook size of
``--codebook-size``, all interleaved round by round so that a change in machine load hits them alike:

- ``seed``:     the study repository's modules and step as its ``train_vqvae.py`` runs them
  (xyfJASON/visual-tokenizer-pytorch: ``models/autoencoder/simple_cnn.py``,
  ``models/quantizer/quantizer.py``, ``models/vqmodel.py``), written again here in plain PyTorch
  from what they compute (their code is not copied): SimpleCNN with in-place ReLUs, the full N x K
  distance matrix and its argmin, codebook + 0.25 commitment MSE, straight-through, the one-hot
  perplexity of every step, and the ``.item()`` of its four logged values. It starts from the
  same weights as the others. (Its in-place ReLU at the head of each residual block also rewrites
  the block's input, so its skip connection carries ReLU(x): the same work, a slightly different
  function.)
- ``seed_bf16``: the same under bf16 autocast, which the seed's ``train_vqvae.py`` does not offer (it
  trains in float32 only): what mixed precision alone would give it.
- ``bare``:     vqexplore's VQModel in a minimal loop: model(x); mse + sum(quantizer losses);
  zero_grad; backward; Adam step. Nothing else.
- ``trainer``:  ``trainer.step.train_step`` plus the per-step bookkeeping of the training loop
  (running loss sums and code counts on the device, the NaN check that the loop does on CPU).
- ``trainer_bf16``: the same with ``train.precision=bf16`` (bf16 autocast; the quantizer's search stays
  float32). On a CPU with AVX512-BF16 or AMX (this project's Zen 4 has the former) oneDNN runs the
  convolutions in bf16.
- ``compiled``: the same, with the model compiled as ``train.compile=true`` compiles it
  (``trainer.step.compile_for_training``); its compilation happens in the warm-up round.
- ``... channels_last`` (``--channels-last``): bare, trainer and compiled again with the model and
  the images in channels-last memory format.

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
- ``compiled`` (``--variants bare trainer compiled``): the same with the generator and the
  discriminator compiled as ``train.compile=true`` compiles them.

Each round runs every variant for ``--steps`` steps, back to back, alternating which goes first.
Prints images/s (median over rounds) and each ratio as the median of the per-round ratios:
variants timed seconds apart see the same machine load, which on a shared machine drifts far
more between rounds than within one. Every variant starts from the same weights and trains its
own copy.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import LossConfig
from trainer.step import GANStage, Window, compile_for_training, train_step, vqgan_train_step
from vqexplore import VQModel


AUTOCAST: torch.dtype | None = None  # --bf16
VARIANTS = ("seed", "seed_bf16", "bare", "trainer", "trainer_bf16", "compiled")


# ---------------------------------------------------------------------------------------------
# The study repository's modules and step, as it computes them
# ---------------------------------------------------------------------------------------------

def _seed_resblock(dim: int) -> nn.Module:
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(dim, dim, 3, padding=1, bias=False),
                                        nn.ReLU(inplace=True), nn.Conv2d(dim, dim, 1, bias=False))

        def forward(self, x):
            return x + self.blocks(x)  # the in-place ReLU has already rewritten x
    return Res()


class SeedVQVAE(nn.Module):
    """SimpleCNN + VQ as the study repository builds and runs them (see the module docstring)."""

    def __init__(self, codebook_size: int, code_dim: int, hidden: int, n_res: int = 2):
        super().__init__()
        half = hidden // 2
        self.encoder = nn.Sequential(
            nn.Conv2d(3, half, 4, 2, 1), nn.LeakyReLU(), nn.Conv2d(half, hidden, 4, 2, 1), nn.LeakyReLU(),
            nn.Conv2d(hidden, hidden, 3, 1, 1), *[_seed_resblock(hidden) for _ in range(n_res)])
        self.enc2code = nn.Conv2d(hidden, code_dim, 1)
        self.codebook = nn.Embedding(codebook_size, code_dim)
        self.code2dec = nn.Conv2d(code_dim, hidden, 1)
        self.decoder = nn.Sequential(
            *[_seed_resblock(hidden) for _ in range(n_res)], nn.LeakyReLU(), nn.Conv2d(hidden, hidden, 3, 1, 1),
            nn.LeakyReLU(), nn.ConvTranspose2d(hidden, half, 4, 2, 1), nn.LeakyReLU(),
            nn.ConvTranspose2d(half, 3, 4, 2, 1), nn.Tanh())

    @torch.no_grad()
    def copy_from(self, model: VQModel) -> "SeedVQVAE":
        """Take ``model``'s weights (same layers, same order)."""
        pairs = [(self.encoder, model.encoder), (self.enc2code, model.pre_quant), (self.code2dec, model.post_quant),
                 (self.decoder, model.decoder)]
        for mine, theirs in pairs:
            for a, b in zip(mine.parameters(), theirs.parameters(), strict=True):
                a.copy_(b)
        self.codebook.weight.copy_(model.quantizer.embedding)
        return self

    def forward(self, x):
        z = self.enc2code(self.encoder(x))
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        codes = self.codebook.weight
        dists = flat.pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1) - 2 * flat @ codes.t()
        idx = dists.argmin(1)
        q = self.codebook(idx).reshape(b, h, w, c).permute(0, 3, 1, 2)
        loss_vq, loss_commit = F.mse_loss(z.detach(), q), F.mse_loss(z, q.detach())
        q = z + (q - z).detach()
        probs = F.one_hot(idx, codes.shape[0]).float().mean(0)
        perplexity = torch.exp(-(probs * probs.clamp(1e-10).log()).sum())
        return self.decoder(self.code2dec(q)), loss_vq, loss_commit, perplexity


def seed_step(model, optimizer, x):
    optimizer.zero_grad()
    recon, loss_vq, loss_commit, perplexity = model(x)
    loss_rec = F.mse_loss(recon, x)
    loss = loss_rec + 0.25 * loss_commit + loss_vq
    loss.backward()
    optimizer.step()
    return [loss_rec.item(), loss_commit.item(), loss_vq.item(), perplexity.item()]  # its per-step log


def seed_bf16_step(model, optimizer, x):
    """The seed's step under bf16 autocast: what it would gain from mixed precision, which its
    train_vqvae.py does not have (its distances then run in bf16 too)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        return seed_step(model, optimizer, x)


# ---------------------------------------------------------------------------------------------
# vqexplore's step
# ---------------------------------------------------------------------------------------------

def bare_step(model, optimizer, x):
    with torch.autocast(x.device.type, dtype=AUTOCAST, enabled=AUTOCAST is not None):
        out = model(x)
        loss = F.mse_loss(out.reconstruction.float(), x) + sum(out.losses.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def make_trainer_step(model, device, autocast: torch.dtype | None = None):
    """The trainer's step with --bf16's autocast, or ``autocast`` (trainer_bf16: train.precision=bf16)."""
    window = Window(model.codebook_size, device)
    dtype = autocast or AUTOCAST
    check_every_step = device.type == "cpu"  # as the loop: a free sync on CPU, at log steps on GPU

    def step(model, optimizer, x):
        out = train_step(model, optimizer, x, dtype)
        window.add(out, x.shape[0])
        if check_every_step and not window.finite():
            raise RuntimeError("non-finite loss")

    return step


def mse_variants(a, device, codebook_size: int) -> tuple[dict, str]:
    """Every variant of ``--variants`` at one codebook size, from the same weights and batch."""
    torch.manual_seed(0)
    base = VQModel(quantizer="vq", codebook_size=codebook_size, code_dim=a.code_dim, hidden_dim=a.hidden).to(device)
    x = torch.rand(a.batch, 3, a.size, a.size, device=device) * 2 - 1
    variants = {}
    k = f"K={codebook_size}"
    formats = [("", torch.contiguous_format)] + ([(" channels_last", torch.channels_last)] if a.channels_last else [])
    for suffix, fmt in formats:
        for kind in a.variants:
            name = f"{k} {kind.replace('_', ' ')}{suffix}"
            if kind.startswith("seed"):
                if suffix:
                    continue
                model = SeedVQVAE(codebook_size, a.code_dim, a.hidden).to(device).copy_from(base)
                opt = torch.optim.Adam(model.parameters(), lr=4e-4)
                variants[name] = (model, opt, seed_bf16_step if kind == "seed_bf16" else seed_step, x)
                continue
            model = copy.deepcopy(base).to(memory_format=fmt)
            opt = torch.optim.Adam(model.parameters(), lr=4e-4)
            bf16 = torch.bfloat16 if kind == "trainer_bf16" else None
            fn = bare_step if kind == "bare" else make_trainer_step(model, device, bf16)
            step_model = compile_for_training(model) if kind == "compiled" else model
            variants[name] = (step_model, opt, fn, x.contiguous(memory_format=fmt))
    n_params = sum(p.numel() for p in base.parameters())
    title = (f"K={codebook_size}: SimpleCNN hidden {a.hidden}, VQ {codebook_size} x {a.code_dim} ({n_params:,} "
             f"parameters), batch {a.batch} at {a.size}x{a.size}")
    return variants, title


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
    """The bare, trainer (and compiled) variants of the VQGAN stage, each with its own copies of the
    same generator and discriminator, and the same (frozen) LPIPS network."""
    from vqexplore.gan import PatchDiscriminator, PerceptualLoss

    torch.manual_seed(0)
    base = VQModel(arch="vqgan", quantizer="vq", codebook_size=16384, code_dim=8, l2_norm=True,
                   resolution=a.size).to(device)
    base_disc = PatchDiscriminator(3, 64, 3).to(device)
    perceptual = PerceptualLoss(pretrained_backbone=False).to(device)
    x = torch.rand(a.batch, 3, a.size, a.size, device=device) * 2 - 1
    variants = {}
    for kind in a.variants:
        model, disc = copy.deepcopy(base), copy.deepcopy(base_disc)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
        disc_opt = torch.optim.Adam(disc.parameters(), lr=1e-4, betas=(0.9, 0.95))
        parts = _Parts((perceptual, disc, disc_opt))
        parts.model = model
        if kind == "bare":
            fn = bare_vqgan_step
        else:
            stage = GANStage(VQGAN_LOSS, perceptual, disc, disc, disc_opt)
            if kind == "compiled":
                parts.model = compile_for_training(model)
                stage.disc, stage.disc_gen = compile_for_training(disc), compile_for_training(disc)
            fn = make_trainer_vqgan_step(model, stage, device)
        variants[kind] = (parts, opt, fn, x)
    n_params = sum(p.numel() for p in base.parameters())
    n_disc = sum(p.numel() for p in base_disc.parameters())
    title = (f"VQGAN stage: LlamaGen VQ-16 ({n_params:,} parameters) + PatchGAN ({n_disc:,}) + LPIPS-VGG (random "
             f"weights), MSE + LPIPS + 0.5 hinge, clip 1.0, batch {a.batch} at {a.size}x{a.size}")
    return variants, title


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--codebook-size", type=int, nargs="+", default=[512, 16384],
                   help="one or more codebook sizes K, all timed in the same rounds")
    p.add_argument("--code-dim", type=int, default=64)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                   help="default: seed trainer compiled (--stage vqgan: bare trainer)")
    p.add_argument("--rounds", type=int, default=9, help="interleaved rounds (the first is warm-up)")
    p.add_argument("--steps", type=int, default=1, help="timed steps per variant per round")
    p.add_argument("--channels-last", action="store_true", help="also time channels-last variants")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed seconds; cpu: this process's CPU seconds (with --threads 1, the measure "
                        "least moved by other jobs on a shared machine)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (as train.precision=bf16)")
    p.add_argument("--stage", choices=("mse", "vqgan"), default="mse",
                   help="mse: the study's SimpleCNN step; vqgan: the VQGAN stage of LlamaGen VQ-16 at --size 256")
    a = p.parse_args()
    if a.stage == "vqgan" and "--size" not in sys.argv:
        a.size = 256
    if a.variants is None:
        a.variants = ["bare", "trainer"] if a.stage == "vqgan" else ["seed", "trainer", "compiled"]
    if a.stage == "vqgan" and {"seed", "seed_bf16", "trainer_bf16"} & set(a.variants):
        p.error("--stage vqgan has no seed variants (its baseline is the bare loop) and no trainer_bf16 (use --bf16)")
    return a


def main() -> None:
    a = parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    global AUTOCAST
    AUTOCAST = torch.bfloat16 if a.bf16 else None
    device = torch.device(a.device)
    setting = (f"{device}{' bf16' if a.bf16 else ' fp32'}, {torch.get_num_threads()} threads, "
               f"torch {torch.__version__}")
    if a.stage == "vqgan":
        variants, title = vqgan_variants(a, device)
        print(f"{title}, {setting}")
        groups = {"": list(variants)}
    else:
        variants, groups = {}, {}
        for k in a.codebook_size:
            these, title = mse_variants(a, device, k)
            variants.update(these)
            groups[f"K={k}"] = list(these)
            print(f"{title}, {setting}")
    start = time.perf_counter()
    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    times = run_rounds(variants, a.rounds, a.steps, device, clock)
    report(times, groups, a)
    print(f"total bench time {time.perf_counter() - start:.0f} s; rounds {a.rounds} (first = warm-up, compilation "
          f"included), {a.steps} timed steps per variant per round")


def run_rounds(variants: dict, rounds: int, steps: int, device: torch.device,
               clock=time.perf_counter) -> dict[str, list[float]]:
    """Seconds per step of every variant in every round but the first (warm-up: allocator, oneDNN
    primitive caches, compilation), the variants alternating which goes first. ``clock``:
    ``time.perf_counter`` (wall) or ``time.process_time`` (this process's CPU seconds)."""
    times = {name: [] for name in variants}
    start = time.perf_counter()
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            model, opt, fn, xx = variants[name]
            _sync(device)
            t0 = clock()
            for _ in range(steps if r else 2 if "compiled" in name else 1):
                fn(model, opt, xx)
            _sync(device)
            if r:
                times[name].append((clock() - t0) / steps)
        print(f"  round {r + 1}/{rounds} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    return times


def report(times: dict[str, list[float]], groups: dict[str, list[str]], a: argparse.Namespace) -> None:
    """One table per codebook size: images/s, s/step, and speed against the group's baseline (the
    seed where timed, else the bare loop) and against the eager trainer step."""
    ips = {name: a.batch / statistics.median(ts) for name, ts in times.items()}
    per = "CPU s/step" if a.clock == "cpu" else "s/step"

    def paired(name: str, ref: str) -> str:
        ratios = sorted(r / n for n, r in zip(times[name], times[ref]))
        return f"{statistics.median(ratios):.3f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"

    for group, names in groups.items():
        prefix = f"{group} " if group else ""
        base = next((prefix + b for b in ("seed", "bare") if prefix + b in names), names[0])
        eager = prefix + "trainer"
        print()
        print(f"| variant | images/s | {per} | speed vs {base} | speed vs {eager} (same format) |")
        print("|---|---:|---:|---:|---:|")
        for name in names:
            fmt_eager = eager + (" channels_last" if name.endswith("channels_last") else "")
            vs_eager = paired(name, fmt_eager) if fmt_eager in times and name != fmt_eager else "-"
            rate = f"{ips[name]:.2f}" if ips[name] >= 1 else f"{ips[name]:.4f}"
            print(f"| {name} | {rate} | {a.batch / ips[name]:.3f} | {paired(name, base)} | {vs_eager} |")
    print(f"\nspeed = baseline {per} / variant {per}, median of the per-round ratios (range in brackets)"
          + ("; images/s per CPU second" if a.clock == "cpu" else ""))


if __name__ == "__main__":
    main()
