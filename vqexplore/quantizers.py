"""Quantizers of the reference study: VQ (with l2 norm, EMA k-means update, entropy
regularisation), FSQ and SimVQ.

Every quantizer is an ``nn.Module`` whose forward takes ``z`` of shape (B, D, H, W) and
returns a :class:`QuantizerOutput`. Codebook access is uniform: ``codebook_size`` and
``codebook_vectors() -> (K, D)``, so analysis code never branches on the quantizer type.

The nearest-code search and the entropy term are computed in chunks of tokens, so that
memory stays at ``chunk x K`` floats instead of ``tokens x K`` (65,536 tokens x 16,384 codes
would be a 4 GB distance matrix).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Target number of distance-matrix elements held at once: 4M floats = 16 MB, so the chunk
# mostly stays in cache between the matmul and the passes that read it; at least 256 rows
# so that the matmul itself stays efficient.
_CHUNK_ELEMENTS = 1 << 22


@dataclass
class QuantizerOutput:
    """What every quantizer returns.

    quantized: (B, D, H, W) codes, with straight-through gradients to the input.
    indices:   (B, H, W) int64 code ids in [0, codebook_size).
    losses:    named scalar tensors to add to the training loss (may be empty).
    """

    quantized: Tensor
    indices: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)


def _to_tokens(z: Tensor) -> Tensor:
    """(B, D, H, W) -> (B*H*W, D)."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def _from_tokens(tokens: Tensor, shape: torch.Size) -> Tensor:
    """(B*H*W, D) -> (B, D, H, W) for the given (B, D, H, W) shape."""
    b, d, h, w = shape
    return tokens.reshape(b, h, w, d).permute(0, 3, 1, 2)


def _chunk_rows(num_codes: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        return max(1, chunk_size)
    return max(256, _CHUNK_ELEMENTS // max(1, num_codes))


@torch.no_grad()
def nearest_code(tokens: Tensor, codebook: Tensor, chunk_size: int | None = None) -> Tensor:
    """Index of the nearest code (squared euclidean distance) for every token.

    tokens: (N, D), codebook: (K, D) -> (N,) int64. Memory: chunk x K floats.
    ``|t|^2`` is constant per token, so argmin over ``|e|^2 - 2 t.e`` suffices; one fused
    ``addmm`` per chunk.
    """
    tokens = tokens.detach().float()
    codebook = codebook.detach().float()
    code_sq = codebook.pow(2).sum(1)
    rows = _chunk_rows(codebook.shape[0], chunk_size)
    out = torch.empty(tokens.shape[0], dtype=torch.long, device=tokens.device)
    for start in range(0, tokens.shape[0], rows):
        chunk = tokens[start : start + rows]
        scores = torch.addmm(code_sq, chunk, codebook.t(), beta=1.0, alpha=-2.0)
        out[start : start + rows] = scores.argmin(1)
    return out


class _ChunkedEntropy(torch.autograd.Function):
    """Entropy regulariser on softmax(-distance / T), computed in chunks of tokens.

    loss = mean_n H(p_n) - H(mean_n p_n): minimising it makes each token's assignment
    confident while spreading the batch over all codes. Forward and backward both walk the
    tokens in chunks and recompute the logits, so no (N, K) tensor is ever stored; only two
    floats per token (log-sum-exp and entropy) are kept for the backward pass. The forward
    also returns the nearest code of every token, which falls out of the same distances.

    |t|^2 is constant per token, so it cancels in the softmax and is never computed:
    logits = (2 t.e - |e|^2) / T.
    """

    @staticmethod
    def forward(ctx, tokens: Tensor, codebook: Tensor, temperature: float, rows: int):
        n = tokens.shape[0]
        code_sq = codebook.pow(2).sum(1)
        lse_all = tokens.new_empty(n)
        ent_all = tokens.new_empty(n)
        prob_sum = tokens.new_zeros(codebook.shape[0])
        idx = torch.empty(n, dtype=torch.long, device=tokens.device)
        for start in range(0, n, rows):
            chunk = tokens[start : start + rows]
            logits = torch.addmm(code_sq, chunk, codebook.t(), beta=-1.0 / temperature, alpha=2.0 / temperature)
            top, idx[start : start + rows] = logits.max(1)
            # One exp pass: unnormalised u = exp(logits - max), p = u / sum(u).
            u = (logits - top[:, None]).exp_()
            total = u.sum(1)
            lse = top + total.log()
            # H = -sum p log p = lse - sum p * logits
            ent_all[start : start + rows] = lse - torch.linalg.vecdot(u, logits) / total
            lse_all[start : start + rows] = lse
            prob_sum.addmv_(u.t(), total.reciprocal())
        avg_prob = prob_sum / n
        avg_entropy = -(avg_prob * avg_prob.clamp_min(1e-12).log()).sum()
        ctx.save_for_backward(tokens, codebook, avg_prob, lse_all, ent_all)
        ctx.temperature, ctx.rows = temperature, rows
        ctx.mark_non_differentiable(idx)
        return ent_all.mean() - avg_entropy, idx

    @staticmethod
    def backward(ctx, grad_out: Tensor, _grad_idx=None):
        tokens, codebook, avg_prob, lse_all, ent_all = ctx.saved_tensors
        t, rows, n = ctx.temperature, ctx.rows, tokens.shape[0]
        code_sq = codebook.pow(2).sum(1)
        # With logp = logits - lse and v = log(avg) / n, the gradient w.r.t. the logits of
        #   H(p_n) / n - H(avg)   is   p * (v - logp / n - H_n / n - <p, v>)
        # (constants from d(p log p) are cancelled by the softmax Jacobian).
        v = avg_prob.clamp_min(1e-12).log() / n
        grad_tokens = torch.empty_like(tokens)
        grad_codebook = torch.zeros_like(codebook)
        col_sum = codebook.new_zeros(codebook.shape[0])
        scale = 2.0 / t * grad_out
        for start in range(0, n, rows):
            chunk = tokens[start : start + rows]
            lse, ent = lse_all[start : start + rows], ent_all[start : start + rows]
            logits = torch.addmm(code_sq, chunk, codebook.t(), beta=-1.0 / t, alpha=2.0 / t)
            p = (logits - lse[:, None]).exp_()
            row_const = (lse - ent) / n - p @ v
            g = p.mul_(logits.mul_(-1.0 / n).add_(v).add_(row_const[:, None]))
            # d logits / d t = 2 e / T;  d logits / d e = 2 (t - e) / T
            grad_tokens[start : start + rows] = scale * (g @ codebook)
            grad_codebook.addmm_(g.t(), chunk, alpha=scale)
            col_sum += g.sum(0)
        grad_codebook -= scale * col_sum[:, None] * codebook
        return grad_tokens, grad_codebook, None, None


def entropy_loss(tokens: Tensor, codebook: Tensor, temperature: float = 0.01,
                 chunk_size: int | None = None) -> Tensor:
    """Entropy regulariser mean_n H(softmax(-d_n / T)) - H(mean_n softmax(-d_n / T)).

    tokens: (N, D), codebook: (K, D) -> scalar. Differentiable w.r.t. both; memory
    chunk x K floats in forward and backward.
    """
    return entropy_and_nearest(tokens, codebook, temperature, chunk_size)[0]


def entropy_and_nearest(tokens: Tensor, codebook: Tensor, temperature: float = 0.01,
                        chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """(entropy loss, nearest-code ids (N,)) from one chunked pass over the distances."""
    rows = _chunk_rows(codebook.shape[0], chunk_size)
    return _ChunkedEntropy.apply(tokens.float(), codebook.float(), float(temperature), rows)


class VectorQuantizer(nn.Module):
    """VQ-VAE quantizer (van den Oord et al.) with the study's options.

    Args:
        codebook_size: number of codes K.
        code_dim: code dimension D.
        l2_norm: l2-normalise tokens and codes before the search; codes are unit vectors.
        ema_update: update the codebook by EMA k-means (decay ``ema_decay``) instead of the
            codebook loss; the commitment loss stays.
        entropy_reg: weight of the entropy regulariser (0 disables it).
        entropy_temperature: softmax temperature on -distances for the entropy term.
        commitment_weight: beta in ``beta * MSE(z, sg[q])``.
        chunk_size: tokens per chunk for the search (default: ~16M distance elements).

    Losses returned: ``codebook`` (absent with EMA), ``commitment``, ``entropy`` (when
    ``entropy_reg > 0``, already multiplied by its weight).
    """

    def __init__(self, codebook_size: int, code_dim: int, *, l2_norm: bool = False,
                 ema_update: bool = False, ema_decay: float = 0.99, entropy_reg: float = 0.0,
                 entropy_temperature: float = 0.01, commitment_weight: float = 0.25,
                 chunk_size: int | None = None, ema_eps: float = 1e-5):
        super().__init__()
        self.codebook_size, self.code_dim = int(codebook_size), int(code_dim)
        self.l2_norm, self.ema_update, self.ema_decay = l2_norm, ema_update, ema_decay
        self.entropy_reg, self.entropy_temperature = entropy_reg, entropy_temperature
        self.commitment_weight, self.chunk_size, self.ema_eps = commitment_weight, chunk_size, ema_eps
        weight = torch.empty(self.codebook_size, self.code_dim).uniform_(
            -1.0 / self.codebook_size, 1.0 / self.codebook_size)
        if l2_norm:
            weight = F.normalize(weight, dim=1)
        if ema_update:
            # EMA codebooks are not trained by the optimiser: buffers, all-reduced under DDP.
            self.register_buffer("embedding", weight)
            # Statistics start as if each code had been assigned once to its initial vector, so
            # a code that is never picked keeps its init instead of being divided by ~eps.
            self.register_buffer("ema_cluster_size", torch.ones(self.codebook_size))
            self.register_buffer("ema_embed_sum", weight.clone())
        else:
            self.embedding = nn.Parameter(weight)

    def codebook_vectors(self) -> Tensor:
        """(K, D) codes as the decoder sees them (unit vectors when ``l2_norm``)."""
        return F.normalize(self.embedding, dim=1) if self.l2_norm else self.embedding

    def lookup(self, indices: Tensor) -> Tensor:
        """(B, H, W) ids -> (B, D, H, W) codes."""
        codes = F.embedding(indices, self.codebook_vectors())
        return codes.permute(0, 3, 1, 2)

    def forward(self, z: Tensor) -> QuantizerOutput:
        tokens = _to_tokens(z).float()
        if self.l2_norm:
            tokens = F.normalize(tokens, dim=1)
        codebook = self.codebook_vectors().float()
        losses: dict[str, Tensor] = {}
        if self.entropy_reg > 0 and self.training:
            entropy, idx = entropy_and_nearest(tokens, codebook, self.entropy_temperature, self.chunk_size)
            losses["entropy"] = self.entropy_reg * entropy
        else:
            idx = nearest_code(tokens, codebook, self.chunk_size)
        q = codebook[idx]
        if self.ema_update:
            if self.training:
                self._ema_step(tokens.detach(), idx)
        else:
            losses["codebook"] = F.mse_loss(q, tokens.detach())
        losses["commitment"] = self.commitment_weight * F.mse_loss(tokens, q.detach())
        q = tokens + (q - tokens).detach()  # straight-through estimator
        b, _, h, w = z.shape
        return QuantizerOutput(_from_tokens(q, z.shape).to(z.dtype), idx.view(b, h, w), losses)

    @torch.no_grad()
    def _ema_step(self, tokens: Tensor, idx: Tensor) -> None:
        """EMA k-means: N_k <- d N_k + (1-d) n_k, m_k <- d m_k + (1-d) sum_{i->k} z_i,
        e_k = m_k / N_k (Laplace-smoothed). Statistics are summed over DDP ranks first."""
        counts = torch.bincount(idx, minlength=self.codebook_size).to(tokens.dtype)
        sums = torch.zeros_like(self.ema_embed_sum).index_add_(0, idx, tokens)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(sums)
        d = self.ema_decay
        self.ema_cluster_size.mul_(d).add_(counts, alpha=1 - d)
        self.ema_embed_sum.mul_(d).add_(sums, alpha=1 - d)
        n = self.ema_cluster_size.sum()
        smoothed = (self.ema_cluster_size + self.ema_eps) / (n + self.codebook_size * self.ema_eps) * n
        self.embedding.copy_(self.ema_embed_sum / smoothed[:, None])


class SimVQ(nn.Module):
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

    def lookup(self, indices: Tensor) -> Tensor:
        return F.embedding(indices, self.codebook_vectors()).permute(0, 3, 1, 2)

    def forward(self, z: Tensor) -> QuantizerOutput:
        tokens = _to_tokens(z).float()
        codebook = self.codebook_vectors().float()
        idx = nearest_code(tokens, codebook, self.chunk_size)
        q = codebook[idx]
        losses = {
            "codebook": F.mse_loss(q, tokens.detach()),
            "commitment": self.commitment_weight * F.mse_loss(tokens, q.detach()),
        }
        q = tokens + (q - tokens).detach()
        b, _, h, w = z.shape
        return QuantizerOutput(_from_tokens(q, z.shape).to(z.dtype), idx.view(b, h, w), losses)


class FSQ(nn.Module):
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
            raise ValueError(f"FSQ levels must all be >= 2, got {levels}")
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

    def codebook_vectors(self) -> Tensor:
        """(K, D) the implicit codebook, row k is the code of id k."""
        return self.indices_to_codes(torch.arange(self.codebook_size, device=self.levels.device))

    def lookup(self, indices: Tensor) -> Tensor:
        return self.indices_to_codes(indices).permute(0, 3, 1, 2)

    def forward(self, z: Tensor) -> QuantizerOutput:
        tokens = _to_tokens(z).float()
        bounded = self.bound(tokens)
        rounded = bounded + (bounded.round() - bounded).detach()
        codes = rounded / (self.levels // 2).float()
        idx = self.codes_to_indices(codes.detach())
        b, _, h, w = z.shape
        return QuantizerOutput(_from_tokens(codes, z.shape).to(z.dtype), idx.view(b, h, w), {})
