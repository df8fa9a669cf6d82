"""Lookup-free quantization (LFQ, Yu et al. 2023, MAGVIT-v2): every channel quantized to its sign.

The codebook is implicit: the K = 2^d vertices of the hypercube {-s, s}^d (s = 1 for LFQ; BSQ, in
``bsq.py``, uses s = 1/sqrt(d) on l2-normalised tokens). Values, index bit order and losses are
those of ``vector_quantize_pytorch.LFQ`` (version 1.32): channel 0 is the most significant bit.

Two forms of the entropy term (``entropy_group_bits``):

- **exact** (``None``, the default): vector_quantize_pytorch's. It needs the softmax over all K codes
  for every token, computed in chunks of tokens by a custom autograd Function (forward and backward
  recompute the logits per chunk), so memory is ``chunk x K`` floats, never ``N x K``, but time is
  O(N K). A purely per-bit form cannot reproduce it: vector_quantize_pytorch clamps every
  probability at 1e-5 inside the log, and the clamp does not factorise over bits. What the
  factorisation does give exactly is each token's log-sum-exp, sum_i log(2 cosh(a s t_i)), which
  saves the max and sum passes.
- **factorised** (``g`` bits per group), as the BSQ paper's soft entropy: the softmax over the
  hypercube codes is a product of independent per-bit distributions, p_n(bit i = 1) =
  sigmoid(4 s t_ni / T), so the per-token entropy is the sum of the d binary entropies (exact for
  the unclamped entropy, O(N d)). The codebook (batch) entropy H(mean_n p_n) does not factorise
  (the average of product distributions is not one); it is approximated by the sum of the
  entropies of the averaged marginals of consecutive groups of ``g`` bits (the last group may be
  shorter), each marginal a softmax over 2^g sub-codes: O(N d 2^g / g). By subadditivity the sum
  is >= the joint entropy; with g = d it is the joint (exact) codebook entropy.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Quantizer, QuantizerOutput, distributed, from_tokens, to_tokens
from .search import chunk_rows

# vector_quantize_pytorch's floor inside every log of the entropy terms.
ENTROPY_EPS = 1e-5


def _working_dtype(t: Tensor) -> Tensor:
    """float64 stays (for exact tests), anything else is computed in float32."""
    return t if t.dtype == torch.float64 else t.float()


class _HypercubeEntropy(torch.autograd.Function):
    """(mean_n H(p_n), H(mean_n p_n)) with p_n = softmax_k(a t_n . c_k) over the hypercube codes.

    H(p) = -sum_k p_k log(max(p_k, eps)), as vector_quantize_pytorch defines it. Chunked over
    tokens in forward and backward; one float per token (its log-sum-exp) and the K average
    probabilities are kept for backward. Under DDP the average probability is over all ranks'
    tokens (as vector_quantize_pytorch's all-reduce), and its gradient is scaled so that DDP's
    gradient averaging gives the gradient of that one global term.

    With ``with_sample`` False only the codebook entropy is computed (the first output is 0); the
    factorised form uses it per group of bits.
    """

    @staticmethod
    def forward(ctx, tokens: Tensor, codes: Tensor, alpha: float, scale: float, rows: int, with_sample: bool = True):
        n = tokens.shape[0]
        # sum_{c in {-s,s}^d} exp(a t.c) = prod_i 2 cosh(a s t_i)  (stable: |x| + log1p(e^-2|x|))
        x = (alpha * scale * tokens).abs()
        lse = (x + torch.log1p(torch.exp(-2 * x))).sum(1)
        log_eps = math.log(ENTROPY_EPS)
        prob_sum = tokens.new_zeros(codes.shape[0])
        sample_entropy = tokens.new_zeros(())
        ones = tokens.new_ones(min(rows, n))
        for start in range(0, n, rows):
            logp = torch.addmm(-lse[start : start + rows, None], tokens[start : start + rows], codes.t(), alpha=alpha)
            p = logp.exp()
            prob_sum.addmv_(p.t(), ones[: p.shape[0]])  # column sums as a GEMV: faster than sum(0)
            if with_sample:
                sample_entropy -= torch.linalg.vecdot(p, logp.clamp_min_(log_eps)).sum()
        count = torch.tensor(float(n), dtype=tokens.dtype, device=tokens.device)
        world = 1
        if distributed():
            world = torch.distributed.get_world_size()
            torch.distributed.all_reduce(prob_sum)
            torch.distributed.all_reduce(count)
        avg = prob_sum / count
        codebook_entropy = -(avg * avg.clamp_min(ENTROPY_EPS).log()).sum()
        ctx.save_for_backward(tokens, codes, lse, avg)
        ctx.alpha, ctx.rows, ctx.grad_scale, ctx.with_sample = alpha, rows, world / float(count), with_sample
        return sample_entropy / n, codebook_entropy

    @staticmethod
    def backward(ctx, grad_sample: Tensor, grad_codebook: Tensor):
        tokens, codes, lse, avg = ctx.saved_tensors
        alpha, rows, n = ctx.alpha, ctx.rows, tokens.shape[0]
        log_eps = math.log(ENTROPY_EPS)
        # dH/dp_k = -log(max(p_k, eps)) - [p_k >= eps]  (the clamp passes no gradient below eps)
        v = (-(avg.clamp_min(ENTROPY_EPS).log()) - (avg >= ENTROPY_EPS).to(avg.dtype))
        v = v * (grad_codebook * ctx.grad_scale)
        w = grad_sample / n
        grad_tokens = torch.empty_like(tokens)
        for start in range(0, n, rows):
            logp = torch.addmm(-lse[start : start + rows, None], tokens[start : start + rows], codes.t(), alpha=alpha)
            if ctx.with_sample:
                p = logp.exp()
                above = (logp >= log_eps).to(p.dtype)
                # g = dL/dp, then through the softmax: dL/dlogits = p * (g - <p, g>)
                g = logp.clamp_min_(log_eps).add_(above).mul_(-w).add_(v)
                g.sub_(torch.linalg.vecdot(p, g)[:, None]).mul_(p)
            else:  # g = v for every token: p * (v - <p, v>)
                p = logp.exp_()
                g = p.mul_(v - (p @ v)[:, None])
            grad_tokens[start : start + rows] = alpha * (g @ codes)
        return grad_tokens, None, None, None, None, None


def hypercube_entropy(tokens: Tensor, scale: float, temperature: float = 0.01,
                      chunk_size: int | None = None, group_bits: int | None = None) -> tuple[Tensor, Tensor]:
    """LFQ's entropy terms for (N, d) tokens against the 2^d codes {-scale, scale}^d.

    p_n = softmax_k(2 t_n . c_k / temperature) (vector_quantize_pytorch: inv_temperature = 1 /
    temperature on -distance = 2 t.c). Returns (per-sample entropy mean_n H(p_n), codebook entropy
    H(mean_n p_n)), both differentiable w.r.t. ``tokens``.

    ``group_bits`` None: the exact form (vector_quantize_pytorch's, with its 1e-5 clamp), O(N 2^d)
    time, memory chunk x 2^d floats. ``group_bits`` g in [1, d]: the factorised form
    (:func:`bit_entropy` and :func:`group_codebook_entropy`), O(N d 2^g / g).
    """
    if group_bits is not None:
        return (bit_entropy(tokens, scale, temperature),
                group_codebook_entropy(tokens, scale, temperature, group_bits, chunk_size))
    d = tokens.shape[1]
    codes = _hypercube(d, scale, tokens.dtype, tokens.device)
    rows = chunk_rows(codes.shape[0], chunk_size, tokens.device)
    return _HypercubeEntropy.apply(tokens, codes, 2.0 / temperature, float(scale), rows)


def bit_entropy(tokens: Tensor, scale: float, temperature: float = 0.01) -> Tensor:
    """mean_n H(p_n) in closed form, O(N d): the sum over bits of binary entropies.

    p_n(c) = prod_i p_ni(c_i) with p_ni(+s) = sigmoid(x_ni), x_ni = 4 s t_ni / T (the logit gap
    between +s and -s on channel i is (2 / T) t_ni 2s). With y = |x|, the binary entropy is
    log(1 + e^-y) + y sigmoid(-y): two non-negative terms, no cancellation at large |x|. This is the
    entropy without vector_quantize_pytorch's clamp of each code's probability at 1e-5 (which
    counts a code below 1e-5 as -p log 1e-5 instead of -p log p, so its per-sample entropy is the
    smaller of the two).
    """
    y = (4.0 * scale / temperature) * tokens.abs()
    return (F.softplus(-y) + y * torch.sigmoid(-y)).sum(1).mean()


def group_codebook_entropy(tokens: Tensor, scale: float, temperature: float = 0.01, group_bits: int = 8,
                           chunk_size: int | None = None) -> Tensor:
    """sum_j H(mean_n p_n^(j)): the codebook entropy approximated over consecutive groups of bits.

    p_n^(j) is the marginal of p_n on the channels of group j, [j g, (j + 1) g) (the last group
    may be shorter): a softmax over that group's 2^g sub-codes {-s, s}^g, exactly the same
    softmax as the full one restricted to those channels, because p_n factorises over bits. Each
    term is vector_quantize_pytorch's H(avg) = -sum avg log(max(avg, 1e-5)) over the group's
    sub-codes, chunked over tokens and averaged over all ranks under DDP (``_HypercubeEntropy``).
    With g = d it is the exact codebook entropy; with g < d it is >= the joint entropy of the
    average (subadditivity), equal when the groups are independent under the batch average.
    """
    d = tokens.shape[1]
    if not 1 <= group_bits <= d:
        raise ValueError(f"group_bits must be in [1, {d}] for {d}-bit codes, got {group_bits!r}")
    total = tokens.new_zeros(())
    for start in range(0, d, group_bits):
        part = tokens[:, start : start + group_bits]
        codes = _hypercube(part.shape[1], scale, tokens.dtype, tokens.device)
        rows = chunk_rows(codes.shape[0], chunk_size, tokens.device)
        total = total + _HypercubeEntropy.apply(part, codes, 2.0 / temperature, float(scale), rows, False)[1]
    return total


def _bit_values(d: int, device=None) -> Tensor:
    """(d,) int64 2^(d-1), ..., 2, 1: channel 0 is the most significant bit."""
    return 2 ** torch.arange(d - 1, -1, -1, device=device)


def _hypercube(d: int, scale: float, dtype=torch.float32, device=None) -> Tensor:
    """(2^d, d) row k = the code of id k: +scale where bit is set, -scale elsewhere."""
    ids = torch.arange(2 ** d, device=device)
    bits = (ids[:, None] & _bit_values(d, device)) != 0
    return (bits.to(dtype) * 2 - 1) * scale  # +-1 exactly, then scaled in ``dtype``


class LFQ(Quantizer):
    """Lookup-free quantization (MAGVIT-v2): q = sign(t) per channel, K = 2^d implicit codes.

    Args:
        codebook_size: K, a power of two >= 2; the code dimension is d = log2(K).
        entropy_loss_weight: weight of the entropy term
            ``mean_n H(p_n) - diversity_gamma * H(mean_n p_n)`` (0 disables it).
        diversity_gamma: weight of the codebook (batch) entropy inside that term.
        commitment_weight: weight of ``MSE(t, sg[q])``.
        entropy_temperature: p_n = softmax(2 t_n . c / temperature) (vector_quantize_pytorch's
            ``inv_temperature`` = 1 / temperature, default 100).
        chunk_size: tokens per chunk of the entropy term (default: ~4M elements of chunk x K on
            the CPU, ~16M on a GPU).
        entropy_group_bits: ``None`` (default): the exact entropy term, vector_quantize_pytorch's,
            O(N K). An integer g in [1, d]: the factorised form (the BSQ paper's), O(N d 2^g / g):
            per-sample entropy as the sum of per-bit binary entropies (exact, without the 1e-5
            clamp), codebook entropy as the sum of the entropies of groups of g bits (an upper
            bound of the joint one; exact at g = d). See the module docstring.

    Losses returned: ``entropy`` (training only, weighted), ``commitment`` (weighted).
    Forward: (B, d, H, W) -> quantized (B, d, H, W) with values +-1, straight-through in
    training; ids (B, H, W) = sum_i [t_i > 0] 2^(d-1-i).
    """

    spherical = False

    def __init__(self, codebook_size: int, *, entropy_loss_weight: float = 0.1, diversity_gamma: float = 1.0,
                 commitment_weight: float = 0.25, entropy_temperature: float = 0.01,
                 chunk_size: int | None = None, entropy_group_bits: int | None = None):
        super().__init__()
        k = int(codebook_size)
        if k < 2 or k & (k - 1):
            raise ValueError(f"codebook_size must be a power of two >= 2 for {type(self).__name__}, got "
                             f"{codebook_size!r}")
        self.codebook_size, self.code_dim = k, k.bit_length() - 1
        if entropy_group_bits is not None and not 1 <= entropy_group_bits <= self.code_dim:
            raise ValueError(f"entropy_group_bits must be in [1, {self.code_dim}] (the code's bits) or None, got "
                             f"{entropy_group_bits!r}")
        self.entropy_group_bits = entropy_group_bits
        self.entropy_loss_weight, self.diversity_gamma = float(entropy_loss_weight), float(diversity_gamma)
        self.commitment_weight, self.entropy_temperature = float(commitment_weight), float(entropy_temperature)
        self.chunk_size = chunk_size
        self.code_scale = self.code_dim ** -0.5 if self.spherical else 1.0
        self.register_buffer("bit_values", _bit_values(self.code_dim), persistent=False)

    def to_code_space(self, tokens: Tensor) -> Tensor:
        """(N, d) encoder outputs -> the space the signs are taken in (identity for LFQ)."""
        return tokens

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """(...) int64 ids -> (..., d) codes in {-s, s}."""
        bits = (indices.long()[..., None] & self.bit_values) != 0
        return (bits.float() * 2 - 1) * self.code_scale

    def codebook_vectors(self) -> Tensor:
        """(K, d) the implicit codebook, row k is the code of id k."""
        return self.indices_to_codes(torch.arange(self.codebook_size, device=self.bit_values.device))

    def lookup(self, indices: Tensor) -> Tensor:
        return self.indices_to_codes(indices).permute(0, 3, 1, 2)

    def forward(self, z: Tensor) -> QuantizerOutput:
        # Full precision under autocast too: logits of 2 t.c / 0.01 do not survive bfloat16.
        with torch.autocast(z.device.type, enabled=False):
            return self._forward(z)

    def _forward(self, z: Tensor) -> QuantizerOutput:
        tokens = self.to_code_space(_working_dtype(to_tokens(z)))
        positive = tokens > 0
        q = (positive.to(tokens.dtype) * 2 - 1) * self.code_scale  # +-s in the tokens' dtype
        idx = (positive.long() * self.bit_values).sum(1)
        losses: dict[str, Tensor] = {}
        if self.training and self.entropy_loss_weight > 0:
            sample, codebook = hypercube_entropy(tokens, self.code_scale, self.entropy_temperature, self.chunk_size,
                                                 self.entropy_group_bits)
            losses["entropy"] = self.entropy_loss_weight * (sample - self.diversity_gamma * codebook)
        losses["commitment"] = self.commitment_weight * F.mse_loss(tokens, q)
        # Straight-through in training; the exact codes otherwise (so lookup(ids) == quantized).
        out = tokens + (q - tokens).detach() if self.training else q
        b, _, h, w = z.shape
        return QuantizerOutput(from_tokens(out, z.shape).to(z.dtype), idx.view(b, h, w), losses)
