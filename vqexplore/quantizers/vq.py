"""VQ-VAE quantizer (van den Oord et al. 2017) with the study's options and the field's remedies
for codebook collapse: k-means init, dead-code restart and the rotation trick."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Quantizer, QuantizerOutput, distributed, from_tokens, to_tokens
from .search import entropy_and_nearest, kmeans, nearest_code


def rotate_to(src: Tensor, tgt: Tensor, eps: float = 1e-6) -> Tensor:
    """Rotation trick (Fifty et al. 2024, sec. 4.2): returns ``tgt`` in the forward pass, with the
    gradient to ``src`` carried through the rotation R (with its rescaling) that maps ``src`` onto
    ``tgt``, R and the scale held constant. ``src``, ``tgt``: (N, D) -> (N, D).

    R e = e - 2 (e.w) w + 2 (e.u) q  with u = e/|e|, q = tgt/|tgt|, w = (u + q)/|u + q|;
    the output is |tgt|/|e| * R e. Unlike the straight-through estimator, the gradient that reaches
    the encoder keeps the angle between ``src`` and its code.
    """
    src_norm = src.norm(dim=-1, keepdim=True)
    tgt_norm = tgt.norm(dim=-1, keepdim=True)
    u = (src / src_norm.clamp_min(eps)).detach()
    q = (tgt / tgt_norm.clamp_min(eps)).detach()
    w = F.normalize(u + q, dim=-1, eps=eps)
    rotated = src - 2 * (src * w).sum(-1, keepdim=True) * w + 2 * (src * u).sum(-1, keepdim=True) * q
    return rotated * (tgt_norm / src_norm.clamp_min(eps)).detach()


class VectorQuantizer(Quantizer):
    """VQ-VAE quantizer with the study's options and the remedies for codebook collapse.

    Args:
        codebook_size: number of codes K.
        code_dim: code dimension D.
        l2_norm: l2-normalise tokens and codes before the search; codes are unit vectors.
        ema_update: update the codebook by EMA k-means (decay ``ema_decay``) instead of the
            codebook loss; the commitment loss stays.
        ema_decay: decay of the EMA codebook statistics and of the usage counts below.
        entropy_reg: weight of the entropy regulariser (0 disables it).
        entropy_temperature: softmax temperature on -distances for the entropy term.
        commitment_weight: beta in ``beta * MSE(z, sg[q])``.
        kmeans_init: on the first training step, set the codebook to ``kmeans_iters`` rounds of
            k-means on that batch's encoder outputs (gathered from every DDP rank).
        dead_code_threshold: a code whose EMA assignment count per step (decay ``ema_decay``)
            falls below this is re-initialised from a random encoder output of the current batch
            (0 disables). A restarted code starts at twice the threshold, so it has
            ln 2 / (1 - decay) steps (69 at 0.99) to win tokens before it can be restarted again.
            At most one code per token of the batch is restarted in a step.
        rotation_trick: pass gradients to the encoder through the rotation trick instead of the
            straight-through estimator (training only; evaluation returns the codes exactly).
        chunk_size: tokens per chunk for the search (default: ~4M distance elements).

    Losses returned: ``codebook`` (absent with EMA), ``commitment``, ``entropy`` (when
    ``entropy_reg > 0``, already multiplied by its weight).

    Under DDP every rank holds the same codebook after a k-means init or a restart: usage counts
    are all-reduced and new code vectors are broadcast from rank 0.
    """

    def __init__(self, codebook_size: int, code_dim: int, *, l2_norm: bool = False,
                 ema_update: bool = False, ema_decay: float = 0.99, entropy_reg: float = 0.0,
                 entropy_temperature: float = 0.01, commitment_weight: float = 0.25,
                 kmeans_init: bool = False, kmeans_iters: int = 10, dead_code_threshold: float = 0.0,
                 rotation_trick: bool = False, chunk_size: int | None = None, ema_eps: float = 1e-5):
        super().__init__()
        self.codebook_size, self.code_dim = int(codebook_size), int(code_dim)
        self.l2_norm, self.ema_update, self.ema_decay = l2_norm, ema_update, ema_decay
        self.entropy_reg, self.entropy_temperature = entropy_reg, entropy_temperature
        self.commitment_weight, self.chunk_size, self.ema_eps = commitment_weight, chunk_size, ema_eps
        self.kmeans_iters, self.dead_code_threshold = kmeans_iters, float(dead_code_threshold)
        self.rotation_trick = rotation_trick
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
        # Remedy state lives in persistent buffers (saved, restored on resume, broadcast by DDP);
        # registered only when the remedy is on, so older checkpoints load unchanged.
        if kmeans_init:
            self.register_buffer("kmeans_done", torch.zeros((), dtype=torch.bool))
        if self.dead_code_threshold > 0:
            self.register_buffer("usage_ema", torch.zeros(self.codebook_size))
            self.register_buffer("restart_steps", torch.zeros((), dtype=torch.int64))

    def codebook_vectors(self) -> Tensor:
        """(K, D) codes as the decoder sees them (unit vectors when ``l2_norm``)."""
        return F.normalize(self.embedding, dim=1) if self.l2_norm else self.embedding

    def to_code_space(self, tokens: Tensor) -> Tensor:
        """(N, D) encoder outputs -> unit vectors with ``l2_norm``, unchanged otherwise."""
        return F.normalize(tokens, dim=1) if self.l2_norm else tokens

    def forward(self, z: Tensor) -> QuantizerOutput:
        tokens = self.to_code_space(to_tokens(z).float())
        if self.training:
            # Remedies change the codebook before the search, so restarted codes can win tokens
            # in this very step, and nothing saved for backward is modified afterwards.
            if hasattr(self, "kmeans_done") and not bool(self.kmeans_done):
                self._kmeans_init(tokens.detach())
            if self.dead_code_threshold > 0:
                self._restart_dead_codes(tokens.detach())
        codebook = self.codebook_vectors().float()
        losses: dict[str, Tensor] = {}
        if self.entropy_reg > 0 and self.training:
            entropy, idx = entropy_and_nearest(tokens, codebook, self.entropy_temperature, self.chunk_size)
            losses["entropy"] = self.entropy_reg * entropy
        else:
            idx = nearest_code(tokens, codebook, self.chunk_size)
        # F.embedding, not codebook[idx]: its backward is deterministic on multi-threaded CPUs
        # (index_put with accumulate is not), so runs and resumes are bit-exact.
        q = F.embedding(idx, codebook)
        if self.training and (self.ema_update or self.dead_code_threshold > 0):
            counts = self._assignment_counts(idx)
            if self.ema_update:
                self._ema_step(tokens.detach(), idx, counts)
            if self.dead_code_threshold > 0:
                self.usage_ema.mul_(self.ema_decay).add_(counts, alpha=1 - self.ema_decay)
        if not self.ema_update:
            losses["codebook"] = F.mse_loss(q, tokens.detach())
        losses["commitment"] = self.commitment_weight * F.mse_loss(tokens, q.detach())
        if self.rotation_trick and self.training:
            q = rotate_to(tokens, q)
        else:
            q = tokens + (q - tokens).detach()  # straight-through estimator
        b, _, h, w = z.shape
        return QuantizerOutput(from_tokens(q, z.shape).to(z.dtype), idx.view(b, h, w), losses)

    # -- codebook updates (no gradients) ---------------------------------------------------
    def _generator(self, device: torch.device, step: int) -> torch.Generator:
        """A generator seeded by the remedy's own step counter: restarts are reproducible on
        resume and identical on every DDP rank, whatever else consumed random numbers."""
        return torch.Generator(device=device).manual_seed(0x5EED + 1_000_003 * step)

    @torch.no_grad()
    def _set_codes(self, rows: Tensor, vectors: Tensor) -> None:
        """Overwrite codes ``rows`` (n,) with ``vectors`` (n, D), keeping EMA statistics in step."""
        if self.l2_norm:
            vectors = F.normalize(vectors, dim=1)
        vectors = vectors.to(self.embedding.dtype)
        self.embedding[rows] = vectors
        if self.ema_update:
            self.ema_cluster_size[rows] = 1.0
            self.ema_embed_sum[rows] = vectors

    @torch.no_grad()
    def _kmeans_init(self, tokens: Tensor) -> None:
        if distributed():
            gathered = [torch.empty_like(tokens) for _ in range(torch.distributed.get_world_size())]
            torch.distributed.all_gather(gathered, tokens)
            tokens = torch.cat(gathered)
        centroids = kmeans(tokens, self.codebook_size, self.kmeans_iters, spherical=self.l2_norm,
                           generator=self._generator(tokens.device, 0), chunk_size=self.chunk_size)
        if distributed():
            torch.distributed.broadcast(centroids, src=0)
        self._set_codes(torch.arange(self.codebook_size, device=tokens.device), centroids)
        if self.dead_code_threshold > 0:
            self.usage_ema.fill_(2 * self.dead_code_threshold)  # a grace period for every code
        self.kmeans_done.fill_(True)

    @torch.no_grad()
    def _restart_dead_codes(self, tokens: Tensor) -> None:
        """Re-initialise codes whose usage EMA is below the threshold from random tokens."""
        step = int(self.restart_steps)
        self.restart_steps.add_(1)
        dead = (self.usage_ema < self.dead_code_threshold).nonzero().squeeze(1)
        if dead.numel() == 0:
            return
        g = self._generator(tokens.device, step + 1)
        n = min(dead.numel(), tokens.shape[0])
        rows = dead[torch.randperm(dead.numel(), generator=g, device=dead.device)[:n]]
        vectors = tokens[torch.randperm(tokens.shape[0], generator=g, device=tokens.device)[:n]].clone()
        if distributed():
            # Every rank has the same dead set (usage counts are all-reduced), so ``rows`` agree;
            # the vectors come from rank 0's batch.
            torch.distributed.broadcast(vectors, src=0)
        self._set_codes(rows, vectors)
        self.usage_ema[rows] = 2 * self.dead_code_threshold

    @torch.no_grad()
    def _assignment_counts(self, idx: Tensor) -> Tensor:
        """(K,) float32 number of tokens assigned to each code in this step, over all DDP ranks."""
        counts = torch.bincount(idx, minlength=self.codebook_size).float()
        if distributed():
            torch.distributed.all_reduce(counts)
        return counts

    @torch.no_grad()
    def _ema_step(self, tokens: Tensor, idx: Tensor, counts: Tensor) -> None:
        """EMA k-means: N_k <- d N_k + (1-d) n_k, m_k <- d m_k + (1-d) sum_{i->k} z_i,
        e_k = m_k / N_k (Laplace-smoothed). ``counts`` are already summed over DDP ranks."""
        sums = torch.zeros_like(self.ema_embed_sum).index_add_(0, idx, tokens)
        if distributed():
            torch.distributed.all_reduce(sums)
        d = self.ema_decay
        self.ema_cluster_size.mul_(d).add_(counts, alpha=1 - d)
        self.ema_embed_sum.mul_(d).add_(sums, alpha=1 - d)
        n = self.ema_cluster_size.sum()
        smoothed = (self.ema_cluster_size + self.ema_eps) / (n + self.codebook_size * self.ema_eps) * n
        self.embedding.copy_(self.ema_embed_sum / smoothed[:, None])
