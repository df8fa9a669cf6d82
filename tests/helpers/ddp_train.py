"""Run under ``torchrun`` by tests/test_trainer_ddp.py: train one config through the trainer and
print this rank's weights hash (only rank 0 writes files, so the other ranks' weights can only
be seen from inside the process).

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


if __name__ == "__main__":
    from trainer.config import load_config
    from trainer.train import train_model

    model = train_model(load_config(sys.argv[1]))
    print(f"rank {os.environ.get('RANK', '0')} weights sha256 {weights_sha256(model)}", flush=True)
