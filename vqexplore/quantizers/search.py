"""The chunked computations every codebook method shares: the nearest-code search and the
entropy regulariser (a custom autograd Function with its derived gradient).

The nearest-code search and the entropy term are computed in chunks of tokens, so that
memory stays at ``chunk x K`` floats instead of ``tokens x K`` (65,536 tokens x 16,384 codes
would be a 4 GB distance matrix).
"""
from __future__ import annotations

import torch
from torch import Tensor

# Target number of distance-matrix elements held at once: 4M floats = 16 MB on the CPU, so the
# chunk mostly stays in cache between the matmul and the passes that read it; at least 256 rows
# so that the matmul itself stays efficient. On a GPU 16M (64 MB): with 256-row chunks the GPU
# waits on kernel launches (H200, LFQ at K = 16384, 65,536 tokens, forward+backward: 115 ms in
# 256-row chunks, 61 ms in 1024-row chunks, 54 ms for the full 24 GB N x K version).
_CHUNK_ELEMENTS = 1 << 22
_CHUNK_ELEMENTS_CUDA = 1 << 24


def chunk_rows(num_codes: int, chunk_size: int | None, device: torch.device | str | None = None) -> int:
    """Tokens per chunk: ``chunk_size`` if given, else ~4M (CPU) or ~16M (CUDA) elements of chunk x K."""
    if chunk_size is not None:
        return max(1, chunk_size)
    target = _CHUNK_ELEMENTS_CUDA if torch.device(device or "cpu").type == "cuda" else _CHUNK_ELEMENTS
    return max(256, target // max(1, num_codes))


@torch.no_grad()
def nearest_code(tokens: Tensor, codebook: Tensor, chunk_size: int | None = None) -> Tensor:
    """Index of the nearest code (squared euclidean distance) for every token.

    tokens: (N, D), codebook: (K, D) -> (N,) int64. Memory: chunk x K floats.
    ``|t|^2`` is constant per token, so argmin over ``|e|^2 - 2 t.e`` suffices; one fused
    ``addmm`` per chunk. Always float32, also inside a bf16 autocast region (a bf16 search would
    confuse codes closer than bf16's 3 significant digits).
    """
    tokens = tokens.detach().float()
    codebook = codebook.detach().float()
    code_sq = codebook.pow(2).sum(1)
    rows = chunk_rows(codebook.shape[0], chunk_size, tokens.device)
    out = torch.empty(tokens.shape[0], dtype=torch.long, device=tokens.device)
    with torch.autocast(tokens.device.type, enabled=False):
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
    """(entropy loss, nearest-code ids (N,)) from one chunked pass over the distances, in float32
    also inside a bf16 autocast region."""
    rows = chunk_rows(codebook.shape[0], chunk_size, tokens.device)
    with torch.autocast(tokens.device.type, enabled=False):
        return _ChunkedEntropy.apply(tokens.float(), codebook.float(), float(temperature), rows)


@torch.no_grad()
def kmeans(tokens: Tensor, num_codes: int, iters: int = 10, *, spherical: bool = False,
           generator: torch.Generator | None = None, chunk_size: int | None = None) -> Tensor:
    """Lloyd's k-means on (N, D) tokens -> (K, D) centroids, with the chunked search.

    Centroids start at distinct random tokens (sampled with replacement when N < K, so that some
    start as duplicates: pair it with dead-code restarts). A cluster that ends an iteration empty
    keeps its previous centroid. ``spherical`` keeps centroids on the unit sphere (cosine k-means,
    for l2-normalised codebooks). Deterministic for a given ``generator``.
    """
    tokens = tokens.detach().float()
    n = tokens.shape[0]
    if n >= num_codes:
        start = torch.randperm(n, generator=generator, device=tokens.device)[:num_codes]
    else:
        start = torch.randint(n, (num_codes,), generator=generator, device=tokens.device)
    centroids = tokens[start].clone()
    for _ in range(iters):
        idx = nearest_code(tokens, centroids, chunk_size)
        counts = torch.bincount(idx, minlength=num_codes)
        sums = torch.zeros_like(centroids).index_add_(0, idx, tokens)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None].to(sums.dtype)
        if spherical:
            centroids = torch.nn.functional.normalize(centroids, dim=1)
    return centroids


@torch.no_grad()
def max_inner_product(tokens: Tensor, codebook: Tensor, chunk_size: int | None = None) -> Tensor:
    """Index of the code with the largest inner product t . e for every token (IBQ's choice).

    tokens: (N, D), codebook: (K, D) -> (N,) int64. Memory: chunk x K floats.
    """
    rows = chunk_rows(codebook.shape[0], chunk_size, tokens.device)
    out = torch.empty(tokens.shape[0], dtype=torch.long, device=tokens.device)
    for start in range(0, tokens.shape[0], rows):
        out[start : start + rows] = (tokens[start : start + rows] @ codebook.t()).argmax(1)
    return out


class _SoftOneHotGradient(torch.autograd.Function):
    """IBQ's straight-through term P E_v - sg[P E_v] with E_v = sg[E], P = softmax(T E^T), and
    the argmax ids, in chunks of tokens.

    The term's value is zero, so the forward computes no softmax at all: one matmul and a max per
    chunk, what plain VQ's search costs, keeping each token's largest logit. The backward computes
    what the gradient needs and no more, per chunk: u = exp(T E^T - top) (one fused addmm and an
    in-place exp), s = rowsum(u), A = G E^T, and with P = u / s:
        dlogits = P * (A - rowsum(P * A)),   dT = dlogits E,   dE = dlogits^T T
    (the codebook gets no gradient through the value, E_v = sg[E]). 1 / s is applied to the
    (chunk, D) results instead of the (chunk, K) matrix. Memory: chunk x K floats, twice.
    """

    @staticmethod
    def forward(ctx, tokens: Tensor, codebook: Tensor, rows: int):
        n = tokens.shape[0]
        top = tokens.new_empty(n)
        idx = torch.empty(n, dtype=torch.long, device=tokens.device)
        for start in range(0, n, rows):
            top[start : start + rows], idx[start : start + rows] = (tokens[start : start + rows] @ codebook.t()).max(1)
        ctx.save_for_backward(tokens, codebook, top)
        ctx.rows = rows
        ctx.mark_non_differentiable(idx)
        return tokens.new_zeros(n, codebook.shape[1]), idx

    @staticmethod
    def backward(ctx, grad_out: Tensor, _grad_idx=None):
        tokens, codebook, top = ctx.saved_tensors
        need_t, need_e = ctx.needs_input_grad[:2]
        grad_tokens = torch.empty_like(tokens) if need_t else None
        grad_codebook = torch.zeros_like(codebook) if need_e else None
        if not (need_t or need_e):
            return None, None, None
        ones = tokens.new_ones(codebook.shape[0])
        for start in range(0, tokens.shape[0], ctx.rows):
            sl = slice(start, start + ctx.rows)
            chunk = tokens[sl]
            u = torch.addmm(-top[sl, None], chunk, codebook.t()).exp_()  # P * s, every entry <= 1
            inv_s = 1.0 / (u @ ones)  # row sums as a GEMV
            a = grad_out[sl] @ codebook.t()
            mean_a = torch.linalg.vecdot(u, a) * inv_s  # rowsum(P * A)
            dl = a.sub_(mean_a[:, None]).mul_(u)  # s * dlogits
            if need_t:
                grad_tokens[sl] = (dl @ codebook).mul_(inv_s[:, None])
            if need_e:
                grad_codebook.addmm_(dl.t(), chunk * inv_s[:, None])
        return grad_tokens, grad_codebook, None


def soft_one_hot_gradient(tokens: Tensor, codebook: Tensor, chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """(zeros (N, D) carrying the gradient of softmax(tokens codebook^T) sg[codebook], argmax ids (N,)).

    IBQ's ``soft - sg[soft]`` without computing ``soft``: the value is exactly zero; the gradient
    w.r.t. ``tokens`` and ``codebook`` (through the logits) is that of the straightforward formula.
    Forward: one chunked matmul + max (plain VQ's cost); memory chunk x K floats in both passes.
    """
    rows = chunk_rows(codebook.shape[0], chunk_size, tokens.device)
    return _SoftOneHotGradient.apply(tokens, codebook, rows)
