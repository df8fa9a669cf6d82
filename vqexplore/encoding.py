"""Images through a model's encoder and quantizer, batch by batch: the code ids, and the encoder
outputs in code space. The one pass that usage counts, galleries and projections start from.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .metrics import CodebookStats, code_counts, codebook_stats
from .utils import eval_mode


def batches(images: Tensor, batch_size: int):
    for start in range(0, images.shape[0], batch_size):
        yield images[start:start + batch_size]


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_indices(model: nn.Module, images: Tensor, batch_size: int = 64) -> np.ndarray:
    """Code ids of every token: images (B, 3, H, W) in [-1, 1] -> int64 (B, H/4, W/4)."""
    if images.dim() != 4:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    device = device_of(model)
    with eval_mode(model):
        out = [model.encode(x.to(device)).cpu() for x in batches(images, batch_size)]
    return torch.cat(out).numpy().astype(np.int64)


def usage_counts(model: nn.Module, images: Tensor, batch_size: int = 64) -> np.ndarray:
    """How often each code is chosen on ``images``: (K,) int64 (K = ``model.codebook_size``)."""
    ids = encode_indices(model, images, batch_size)
    return code_counts(torch.from_numpy(ids), model.codebook_size).numpy()


def usage_stats(counts: np.ndarray | Tensor) -> CodebookStats:
    """Usage, perplexity, dead codes and normalised entropy of a (K,) count
    (``vqexplore.metrics.codebook_stats``)."""
    return codebook_stats(torch.as_tensor(np.asarray(counts), dtype=torch.int64))


@dataclass
class EncodedSample:
    """A sample of images through the encoder and quantizer.

    indices: int64 (B, h, w) code ids; latents: float32 (B, h, w, D) encoder outputs in code
    space (what the nearest-code search compares with ``model.codebook_vectors()``).
    """

    indices: np.ndarray
    latents: np.ndarray

    def counts(self, codebook_size: int) -> np.ndarray:
        """(K,) int64 usage counts."""
        return code_counts(torch.from_numpy(self.indices), codebook_size).numpy()


@torch.no_grad()
def encode_sample(model: nn.Module, images: Tensor, batch_size: int = 64) -> EncodedSample:
    """One pass of ``images`` (B, 3, H, W) in [-1, 1] through encoder and quantizer, keeping
    both the code ids and the encoder outputs (in code space), so that counts, galleries and
    projected encoder outputs need no second pass."""
    device = device_of(model)
    ids, lats = [], []
    with eval_mode(model):
        for x in batches(images, batch_size):
            z = model.encode_latents(x.to(device))
            ids.append(model.quantizer(z).indices.cpu())
            tokens = z.permute(0, 2, 3, 1).float()
            shape = tokens.shape
            lats.append(model.quantizer.to_code_space(tokens.reshape(-1, shape[-1])).reshape(shape).cpu())
    return EncodedSample(torch.cat(ids).numpy().astype(np.int64), torch.cat(lats).numpy().astype(np.float32))
