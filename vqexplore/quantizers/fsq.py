"""Finite scalar quantization (Mentzer et al. 2023): an implicit product-grid codebook."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ConfigError
from .base import Quantizer, QuantizerOutput, from_tokens, to_tokens


class FSQ(Quantizer):
    """Finite scalar quantization (Mentzer et al. 2023), with values and index order as
    ``vector_quantize_pytorch.FSQ`` defines them.

    Each of the D = len(levels) channels is bounded with tanh to ``levels[i]`` values and
    rounded with a straight-through estimator; the codebook is implicit (the product grid,
    K = prod(levels)), values in [-1, 1], index = sum_i digit_i * prod(levels[:i]).
    """

    def __init__(self, levels: list[int], *, eps: float = 1e-3):
        super().__init__()
        levels = [int(v) for v in levels]
        if not levels or min(levels) < 2:
            raise ConfigError(f"every FSQ level must be >= 2, got {levels}", key="levels")
        self.levels_list = levels
        self.eps = eps
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.int64), persistent=False)
        basis = torch.cumprod(torch.tensor([1] + levels[:-1], dtype=torch.int64), 0)
        self.register_buffer("basis", basis, persistent=False)
        self.codebook_size = int(math.prod(levels))
        self.code_dim = len(levels)

    def bound(self, z: Tensor) -> Tensor:
        """Squash (..., D) so that rounding gives ``levels[i]`` integer values per channel."""
        levels = self.levels.to(z.dtype)
        half_l = (levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0).to(z.dtype)
        shift = (offset / half_l).atanh()
        return (z + shift).tanh() * half_l - offset

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """(..., D) code values in [-1, 1] -> (...) int64 ids."""
        half_width = (self.levels // 2).to(codes.dtype)
        digits = (codes * half_width + half_width).round().long()
        return (digits * self.basis).sum(-1)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """(...) int64 ids -> (..., D) code values in [-1, 1]."""
        digits = (indices.long()[..., None] // self.basis) % self.levels
        half_width = self.levels // 2
        return (digits - half_width).float() / half_width.float()

    def to_code_space(self, tokens: Tensor) -> Tensor:
        """(N, D) encoder outputs -> bounded and scaled to [-1, 1], where the codes live."""
        return self.bound(tokens) / (self.levels // 2).to(tokens.dtype)

    def codebook_vectors(self) -> Tensor:
        """(K, D) the implicit codebook, row k is the code of id k."""
        return self.indices_to_codes(torch.arange(self.codebook_size, device=self.levels.device))

    def lookup(self, indices: Tensor) -> Tensor:
        return self.indices_to_codes(indices).permute(0, 3, 1, 2)

    def forward(self, z: Tensor) -> QuantizerOutput:
        tokens = to_tokens(z).float()
        bounded = self.bound(tokens)
        rounded = bounded + (bounded.round() - bounded).detach()
        codes = rounded / (self.levels // 2).float()
        idx = self.codes_to_indices(codes.detach())
        b, _, h, w = z.shape
        return QuantizerOutput(from_tokens(codes, z.shape).to(z.dtype), idx.view(b, h, w), {})
