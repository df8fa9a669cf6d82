"""Processes and devices: which process am I, which device do I use, and the few collective
operations the loop needs.

One process: nothing to join (``WORLD_SIZE`` unset or 1). Several: ``torchrun`` sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; the group uses nccl on GPUs and gloo on CPU. Every helper
here is a no-op (or the identity) for one process, so the loop reads the same either way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

from vqexplore.errors import ConfigError


@dataclass
class Dist:
    """This process's place in the group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files, logs and the progress bar."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` -> a usable device, or ConfigError
    naming ``train.device`` when the asked-for one is not there. ``auto`` prefers CUDA (this
    process's local GPU), then MPS, then CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device: cuda was asked for but no CUDA GPU is visible; use train.device=auto or "
                              "cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device: mps was asked for but is not available; use train.device=auto or cpu")
    return device


def setup(device_name: str) -> tuple[Dist, torch.device]:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and join the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), pick_device(device_name)
    import torch.distributed as dist

    d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(device_name, d.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return d, device


def teardown(d: Dist) -> None:
    """Leave the process group (if this process joined one)."""
    if d.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def wrap(model: torch.nn.Module, d: Dist, device: torch.device) -> torch.nn.Module:
    """The module the step runs: ``model`` itself, or DDP around it (gradients averaged)."""
    if not d.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def all_true(flag: bool, d: Dist, device: torch.device) -> bool:
    """True on every rank only if ``flag`` is true on every rank."""
    if not d.enabled:
        return flag
    import torch.distributed as dist

    t = torch.tensor([0.0 if flag else 1.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() == 0)


def sum_over_ranks(t: Tensor, d: Dist) -> None:
    """In place: ``t`` becomes the sum of ``t`` over every rank."""
    if d.enabled:
        import torch.distributed as dist

        dist.all_reduce(t)


def barrier(d: Dist) -> None:
    """Wait until every rank gets here."""
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()
