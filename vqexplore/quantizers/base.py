"""What every quantizer shares: the output dataclass, the token reshapes and the base class.

A quantizer is an ``nn.Module`` whose forward takes encoder outputs ``z`` (B, D, H, W) and returns
a :class:`QuantizerOutput`. Codebook access is uniform (``codebook_size``, ``code_dim``,
``codebook_vectors()``, ``lookup``, ``to_code_space``), so analysis code never branches on the
quantizer type.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class QuantizerOutput:
    """What every quantizer returns.

    quantized: (B, D, H, W) codes, with gradients to the input (straight-through or another
               estimator).
    indices:   (B, H, W) int64 code ids in [0, codebook_size).
    losses:    named scalar tensors to add to the training loss (may be empty), already weighted.
    """

    quantized: Tensor
    indices: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)


def to_tokens(z: Tensor) -> Tensor:
    """(B, D, H, W) -> (B*H*W, D)."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def from_tokens(tokens: Tensor, shape: torch.Size) -> Tensor:
    """(B*H*W, D) -> (B, D, H, W) for the given (B, D, H, W) shape."""
    b, d, h, w = shape
    return tokens.reshape(b, h, w, d).permute(0, 3, 1, 2)


def distributed() -> bool:
    """True inside an initialised torch.distributed process group (DDP under torchrun)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class Quantizer(nn.Module):
    """Base class: subclasses set ``codebook_size`` and ``code_dim`` and implement
    ``codebook_vectors`` and ``forward``."""

    codebook_size: int
    code_dim: int

    def codebook_vectors(self) -> Tensor:
        """(K, D) codes as the decoder receives them."""
        raise NotImplementedError

    def lookup(self, indices: Tensor) -> Tensor:
        """(B, H, W) int64 ids -> (B, D, H, W) codes."""
        return F.embedding(indices, self.codebook_vectors()).permute(0, 3, 1, 2)

    def to_code_space(self, tokens: Tensor) -> Tensor:
        """Encoder outputs (N, D) -> the space the codebook lives in (where the search happens),
        so that they can be drawn together with ``codebook_vectors()``. Identity by default."""
        return tokens
