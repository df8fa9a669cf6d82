"""One training step and the running window of losses and code counts between two log rows.

``train_step`` (the study's MSE loss) and ``vqgan_train_step`` (the VQGAN stage: perceptual and
adversarial losses, a generator and a discriminator step) are what ``bench/train_step.py`` times
against bare PyTorch loops: keep them lean.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class StepOutput:
    loss: Tensor                 # total loss (detached scalar)
    recon_loss: Tensor           # MSE(reconstruction, images) (detached scalar)
    losses: dict[str, Tensor]    # the quantizer's named losses (detached scalars)
    indices: Tensor              # (B, h, w) code ids
    extras: dict[str, Tensor] = field(default_factory=dict)  # VQGAN stage: perceptual_loss, gen_loss,
    #                              disc_loss, logits_real, logits_fake, adaptive_weight (detached scalars)


def train_step(model, optimizer: torch.optim.Optimizer, images: Tensor,
               autocast_dtype: torch.dtype | None = None, grad_clip: float = 0.0) -> StepOutput:
    """One Adam step on loss = MSE(reconstruction, images) + sum of the quantizer's losses.

    images: (B, 3, H, W) in [-1, 1] on the model's device. ``autocast_dtype`` (e.g. bfloat16)
    runs the forward under autocast; the quantizers compute distances in float32 regardless.
    ``grad_clip`` > 0 clips the global gradient norm to it before the step.
    """
    with torch.autocast(images.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        out = model(images)
        recon_loss = F.mse_loss(out.reconstruction.float(), images.float())
        loss = recon_loss + sum(out.losses.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return StepOutput(loss.detach(), recon_loss.detach(), {k: v.detach() for k, v in out.losses.items()},
                      out.indices)


def compile_for_training(module: torch.nn.Module) -> torch.nn.Module:
    """``train.compile``: ``torch.compile`` of a module the step runs (the model, DDP-wrapped first
    when distributed, as PyTorch's DDP guidance has it; the discriminator). The result is a wrapper
    that shares ``module``'s parameters and buffers: checkpoints, the weight EMA and validation go
    on using the module itself, so no ``_orig_mod.`` name ever reaches a file. Compilation happens
    at the first step (CPU: needs a C++ compiler), and again after a resume."""
    return torch.compile(module)


@dataclass
class GANStage:
    """What the VQGAN stage adds to a step: the loss settings (``trainer.config.LossConfig``), the
    perceptual loss (None when its weight is 0) and the discriminator (``disc``: what the D step
    runs, DDP-wrapped when distributed and compiled with ``train.compile``; ``disc_module``: the
    module itself, whose weights and optimiser state are saved; ``disc_gen``: what the generator's
    adversarial loss runs, ``disc_module`` itself or, with ``train.compile``, compiled) with its
    optimiser (None when the adversarial weight is 0)."""

    loss: object
    perceptual: torch.nn.Module | None = None
    disc: torch.nn.Module | None = None
    disc_module: torch.nn.Module | None = None
    disc_optimizer: torch.optim.Optimizer | None = None
    disc_gen: torch.nn.Module | None = None


def vqgan_train_step(model, optimizer: torch.optim.Optimizer, images: Tensor, stage: GANStage, adversarial: bool,
                     autocast_dtype: torch.dtype | None = None, grad_clip: float = 0.0) -> StepOutput:
    """One generator step, then (when ``adversarial``) one discriminator step.

    Generator: ``recon_weight * recon + lpips_weight * LPIPS + quantizer losses [+ w * G(D(x_hat))]``
    where ``w`` is ``adv_weight`` or taming's adaptive weight; the discriminator's weights get no
    gradient from it. Discriminator: its hinge or non-saturating loss on ``D(x)`` and
    ``D(sg[x_hat])`` (the same reconstruction), with its own Adam. ``grad_clip`` clips each
    network's gradient norm. ``adversarial`` is False before ``loss.disc_start``: no
    discriminator is run at all then.
    """
    if stage.loss.adaptive_weight:
        # The adaptive weight differentiates the generator's losses before the backward pass
        # (retain_graph): a compiled model (train.compile) must then keep the buffers its backward
        # saved instead of donating them, from its first compilation on (before loss.disc_start too).
        with torch._functorch.config.patch(donated_buffer=False):
            return _vqgan_step(model, optimizer, images, stage, adversarial, autocast_dtype, grad_clip)
    return _vqgan_step(model, optimizer, images, stage, adversarial, autocast_dtype, grad_clip)


def _vqgan_step(model, optimizer: torch.optim.Optimizer, images: Tensor, stage: GANStage, adversarial: bool,
                autocast_dtype: torch.dtype | None, grad_clip: float) -> StepOutput:
    from vqexplore.gan import adaptive_weight, discriminator_loss, generator_loss, last_layer

    cfg = stage.loss
    extras: dict[str, Tensor] = {}
    with torch.autocast(images.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        out = model(images)
        recon = out.reconstruction
        if cfg.recon == "l1":
            recon_loss = F.l1_loss(recon.float(), images.float())
        else:
            recon_loss = F.mse_loss(recon.float(), images.float())
        nll = cfg.recon_weight * recon_loss
        if stage.perceptual is not None:
            perceptual = stage.perceptual(recon, images)
            nll = nll + cfg.lpips_weight * perceptual
            extras["perceptual_loss"] = perceptual.detach()
        loss = nll + sum(out.losses.values())
        if adversarial:
            disc = stage.disc_module
            disc.requires_grad_(False)  # the generator's loss trains the generator only
            try:
                g_loss = generator_loss((disc if stage.disc_gen is None else stage.disc_gen)(recon), cfg.disc_loss)
            finally:
                disc.requires_grad_(True)
            if cfg.adaptive_weight:
                weight = adaptive_weight(nll, g_loss, last_layer(model), cfg.adv_weight)
            else:
                weight = torch.tensor(cfg.adv_weight, device=images.device)
            loss = loss + weight * g_loss
            extras.update(gen_loss=g_loss.detach(), adaptive_weight=weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if adversarial:
        fake = recon.detach()
        with torch.autocast(images.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits_real, logits_fake = stage.disc(images), stage.disc(fake)
            d_loss = discriminator_loss(logits_real, logits_fake, cfg.disc_loss)
        stage.disc_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(stage.disc_module.parameters(), grad_clip)
        stage.disc_optimizer.step()
        extras.update(disc_loss=d_loss.detach(), logits_real=logits_real.detach().float().mean(),
                      logits_fake=logits_fake.detach().float().mean())
    return StepOutput(loss.detach(), recon_loss.detach(), {k: v.detach() for k, v in out.losses.items()},
                      out.indices, extras)


class Window:
    """Running sums of the losses and code counts between two log rows, kept on the device so
    that a step never waits for the host."""

    def __init__(self, codebook_size: int, device: torch.device):
        self.counts = torch.zeros(codebook_size, dtype=torch.long, device=device)
        self.sums: dict[str, Tensor] = {}
        self.steps: dict[str, int] = {}  # steps that logged each key (the VQGAN's from loss.disc_start on)
        self.reset()

    def reset(self) -> None:
        self.sums.clear()
        self.steps.clear()
        self.counts.zero_()
        self.n, self.images, self.t0 = 0, 0, time.perf_counter()

    def add(self, out: StepOutput, images: int) -> None:
        for key, value in (("loss", out.loss), ("recon_loss", out.recon_loss),
                           *((f"{k}_loss", v) for k, v in out.losses.items()), *out.extras.items()):
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
            self.steps[key] = self.steps.get(key, 0) + 1
        self.counts += torch.bincount(out.indices.flatten(), minlength=self.counts.numel())
        self.n += 1
        self.images += images

    def finite(self) -> bool:
        """False if any loss since the last reset was NaN or infinite (they propagate into the sum)."""
        return all(bool(torch.isfinite(self.sums[k])) for k in ("loss", "disc_loss") if k in self.sums)

    def summary(self) -> dict:
        """Mean losses, and codebook usage / perplexity of the codes chosen in the window."""
        means = {k: float(v) / max(self.steps.get(k, 0), 1) for k, v in self.sums.items()}
        return {**means, **_code_stats(self.counts)}


def _code_stats(counts: Tensor) -> dict:
    """Usage and perplexity of a (K,) code count (an empty count gives zeros)."""
    from vqexplore.metrics import codebook_stats

    counts = counts.cpu()
    if int(counts.sum()) == 0:
        return {"usage": 0.0, "perplexity": 0.0}
    s = codebook_stats(counts)
    return {"usage": s.usage, "perplexity": s.perplexity}
