"""One training step and the running window of losses and code counts between two log rows.

``train_step`` is what ``bench/train_step.py`` times against a bare PyTorch loop: keep it lean.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class StepOutput:
    loss: Tensor                 # total loss (detached scalar)
    recon_loss: Tensor           # MSE(reconstruction, images) (detached scalar)
    losses: dict[str, Tensor]    # the quantizer's named losses (detached scalars)
    indices: Tensor              # (B, h, w) code ids


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


class Window:
    """Running sums of the losses and code counts between two log rows, kept on the device so
    that a step never waits for the host."""

    def __init__(self, codebook_size: int, device: torch.device):
        self.counts = torch.zeros(codebook_size, dtype=torch.long, device=device)
        self.sums: dict[str, Tensor] = {}
        self.reset()

    def reset(self) -> None:
        self.sums.clear()
        self.counts.zero_()
        self.n, self.images, self.t0 = 0, 0, time.perf_counter()

    def add(self, out: StepOutput, images: int) -> None:
        for key, value in (("loss", out.loss), ("recon_loss", out.recon_loss),
                           *((f"{k}_loss", v) for k, v in out.losses.items())):
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
        self.counts += torch.bincount(out.indices.flatten(), minlength=self.counts.numel())
        self.n += 1
        self.images += images

    def finite(self) -> bool:
        """False if any loss since the last reset was NaN or infinite (they propagate into the sum)."""
        return "loss" not in self.sums or bool(torch.isfinite(self.sums["loss"]))

    def summary(self) -> dict:
        """Mean losses, and codebook usage / perplexity of the codes chosen in the window."""
        means = {k: float(v) / max(self.n, 1) for k, v in self.sums.items()}
        return {**means, **_code_stats(self.counts)}


def _code_stats(counts: Tensor) -> dict:
    """Usage and perplexity of a (K,) code count (an empty count gives zeros)."""
    from vqexplore.metrics import codebook_stats

    counts = counts.cpu()
    if int(counts.sum()) == 0:
        return {"usage": 0.0, "perplexity": 0.0}
    s = codebook_stats(counts)
    return {"usage": s.usage, "perplexity": s.perplexity}
