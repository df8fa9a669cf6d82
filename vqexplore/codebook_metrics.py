"""Codebook metrics of a (K,) int64 count of how often each code was chosen: usage, perplexity,
dead codes, normalised entropy, and a streaming counter (``vqexplore.metrics`` re-exports them).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor



def code_counts(indices: Tensor, codebook_size: int) -> Tensor:
    """How often each code occurs: integer ids of any shape in [0, K) -> (K,) int64, same device."""
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise TypeError(f"indices must be an integer tensor, got {indices.dtype}")
    flat = indices.reshape(-1).long()
    if flat.numel():
        low, high = (int(v) for v in flat.aminmax())
        if low < 0 or high >= codebook_size:
            raise ValueError(f"indices must lie in [0, {codebook_size}), got [{low}, {high}]")
    return torch.bincount(flat, minlength=codebook_size)


def _check_counts(counts: Tensor) -> Tensor:
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(f"counts must be a non-empty (K,) tensor, got shape {tuple(counts.shape)}")
    return counts


def codebook_usage(counts: Tensor) -> float:
    """Fraction of the K codes used at least once, in [0, 1]."""
    counts = _check_counts(counts)
    return float((counts > 0).sum()) / counts.numel()


def _entropy(counts: Tensor) -> float:
    """Entropy (nats) of the empirical code distribution."""
    counts = _check_counts(counts)
    total = counts.sum()
    if int(total) == 0:
        raise ValueError("counts are all zero: count some code indices before asking for their entropy")
    probs = counts[counts > 0].double() / total.double()
    return float(-(probs * probs.log()).sum())


def perplexity(counts: Tensor) -> float:
    """exp(entropy) of the code distribution (natural log): the effective number of codes used,
    between 1 (one code) and K (all codes equally often)."""
    return math.exp(_entropy(counts))


def normalized_entropy(counts: Tensor) -> float:
    """Entropy of the code distribution divided by log K, in [0, 1] (1 = uniform; 1 when K = 1)."""
    entropy = _entropy(counts)
    num_codes = counts.numel()
    return 1.0 if num_codes == 1 else entropy / math.log(num_codes)


def dead_codes(counts: Tensor) -> Tensor:
    """Ids of the codes never used: (num_dead,) int64, same device as counts."""
    return torch.nonzero(_check_counts(counts) == 0).flatten()


@dataclass
class CodebookStats:
    """Summary of a (K,) code count; ``dead_codes`` is how many codes were never used."""

    codebook_size: int
    usage: float
    perplexity: float
    dead_codes: int
    normalized_entropy: float

    def as_dict(self) -> dict:
        return asdict(self)


def codebook_stats(counts: Tensor) -> CodebookStats:
    """All codebook statistics of a (K,) count (which must not be all zero)."""
    counts = _check_counts(counts)
    return CodebookStats(
        codebook_size=counts.numel(),
        usage=codebook_usage(counts),
        perplexity=perplexity(counts),
        dead_codes=int((counts == 0).sum()),
        normalized_entropy=normalized_entropy(counts),
    )


class CodeCounter:
    """Streaming code counts: ``update(indices)`` per batch, then ``counts`` / ``stats()``.

    The (K,) int64 count lives on the device of the indices it last received, so counting
    GPU indices needs no host copy per batch.
    """

    def __init__(self, codebook_size: int):
        if not isinstance(codebook_size, int) or codebook_size < 1:
            raise ValueError(f"codebook_size must be a positive integer, got {codebook_size!r}")
        self.codebook_size = codebook_size
        self._counts = torch.zeros(codebook_size, dtype=torch.long)

    def update(self, indices: Tensor) -> None:
        """Count integer code ids of any shape in [0, codebook_size)."""
        batch_counts = code_counts(indices, self.codebook_size)
        self._counts = self._counts.to(batch_counts.device) + batch_counts

    @property
    def counts(self) -> Tensor:
        """(K,) int64 counts so far."""
        return self._counts

    @property
    def total(self) -> int:
        """Number of code ids counted so far."""
        return int(self._counts.sum())

    def stats(self) -> CodebookStats:
        return codebook_stats(self._counts)

    def reset(self) -> None:
        self._counts = torch.zeros_like(self._counts)
