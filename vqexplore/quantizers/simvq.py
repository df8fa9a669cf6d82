"""SimVQ (Zhu et al. 2024): a frozen random codebook through one learned linear layer."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Quantizer, QuantizerOutput, from_tokens, to_tokens
from .search import nearest_code


class SimVQ(Quantizer):
    """SimVQ (Zhu et al. 2024): a frozen random codebook C ~ N(0, D^-1) passed through one
    learned linear layer W; the search and the VQ losses use the projected codebook C W."""

    def __init__(self, codebook_size: int, code_dim: int, *, commitment_weight: float = 0.25,
                 chunk_size: int | None = None):
        super().__init__()
        self.codebook_size, self.code_dim = int(codebook_size), int(code_dim)
        self.commitment_weight, self.chunk_size = commitment_weight, chunk_size
        # A persistent buffer: saved with the weights, never trained.
        self.register_buffer("frozen_codebook", torch.randn(self.codebook_size, self.code_dim) * self.code_dim ** -0.5)
        self.projection = nn.Linear(self.code_dim, self.code_dim, bias=False)

    def codebook_vectors(self) -> Tensor:
        """(K, D) projected codebook C W^T."""
        return self.projection(self.frozen_codebook)

    def forward(self, z: Tensor) -> QuantizerOutput:
        tokens = to_tokens(z).float()
        codebook = self.codebook_vectors().float()
        idx = nearest_code(tokens, codebook, self.chunk_size)
        # F.embedding, not codebook[idx]: its backward is deterministic on multi-threaded CPUs
        # (index_put with accumulate is not), so runs and resumes are bit-exact.
        q = F.embedding(idx, codebook)
        losses = {
            "codebook": F.mse_loss(q, tokens.detach()),
            "commitment": self.commitment_weight * F.mse_loss(tokens, q.detach()),
        }
        q = tokens + (q - tokens).detach()
        b, _, h, w = z.shape
        return QuantizerOutput(from_tokens(q, z.shape).to(z.dtype), idx.view(b, h, w), losses)
