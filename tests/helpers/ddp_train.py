"""Run under ``torchrun`` by tests/test_trainer_ddp.py: train one config through the trainer and
print this rank's weights hash, and its discriminator's when the run trains one (only rank 0
writes files, so the other ranks' weights can only be seen from inside the process).

    torchrun --nproc-per-node 2 tests/helpers/ddp_train.py CONFIG.yaml
"""
from __future__ import annotations

import hashlib
import os
import sys

import torch


def weights_sha256(model) -> str:
    """A hash of every weight and buffer (to compare ranks or runs)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def parameters_sha256(module) -> str:
    """A hash of the parameters only (a discriminator's BatchNorm running statistics are each
    rank's own: DDP broadcasts them from rank 0 at every forward, the last forward updates them
    locally, and the discriminator never runs in eval mode, so they are never read)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.named_parameters()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    from trainer.config import load_config
    from trainer.train import train_run

    run = train_run(load_config(sys.argv[1]))
    rank = os.environ.get("RANK", "0")
    print(f"rank {rank} weights sha256 {weights_sha256(run.model)}", flush=True)
    if run.stage is not None and run.stage.disc_module is not None:
        print(f"rank {rank} discriminator sha256 {parameters_sha256(run.stage.disc_module)}", flush=True)
