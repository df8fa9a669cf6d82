"""The training recipe around the optimiser: learning-rate schedule and an EMA of the weights.

Both are pure functions of the step and the weights, so a resumed run follows exactly the same
schedule and EMA as an uninterrupted one.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def learning_rate(step: int, *, lr: float, steps: int, schedule: str = "constant",
                  warmup_steps: int = 0, min_lr: float = 0.0) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warm-up over ``warmup_steps``
    (lr * (step + 1) / warmup_steps), then ``constant`` or ``cosine`` from ``lr`` at the end of
    warm-up down to ``min_lr`` at the last step."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    span = max(steps - warmup_steps - 1, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def set_learning_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = value


class WeightEMA:
    """An exponential moving average of a model's parameters: ema <- d ema + (1 - d) w after
    every optimiser step. Buffers (EMA k-means codebooks, dead-code statistics, frozen SimVQ
    codes) are copied, not averaged: they are state, not weights.

    ``model`` is a full copy of the live model (same class, config and ``save_pretrained``), so it
    is evaluated, saved and loaded like any checkpoint.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, live: nn.Module) -> None:
        ema_params = list(self.model.parameters())
        live_params = list(live.parameters())
        torch._foreach_lerp_(ema_params, live_params, 1.0 - self.decay)
        for ema_buf, buf in zip(self.model.buffers(), live.buffers()):
            ema_buf.copy_(buf)
