"""Index backpropagation quantization (IBQ, Shi et al. 2024): straight-through on the one-hot of
the softmax over all codes, so that every code receives a gradient at every step."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Quantizer, QuantizerOutput, from_tokens, to_tokens
from .search import max_inner_product, soft_one_hot_gradient


class IBQ(Quantizer):
    """Index backpropagation quantization.

    With logits l = t . E^T over all K codes, P = softmax(l) and H = one_hot(argmax l), the
    quantized token is z_q = (H - sg[P] + P) E: its value is the chosen code e_argmax, and its
    gradient reaches the encoder and *every* code through the softmax. The term (P - sg[P]) E is zero
    in value, so the forward computes only the argmax (one chunked matmul, as plain VQ's search) and
    the backward computes P and its gradient in chunks of tokens
    (``search.soft_one_hot_gradient``), never as an (N, K) tensor.

    Losses (as the official implementation, TencentARC SEED-Voken ``IndexPropagationQuantize``):
      ``quantization``  MSE(z_q, t), no stop-gradient: it pulls t, and every code through the
                        soft one-hot;
      ``commitment``    commitment_weight * MSE(t, sg[e]);
      ``codebook``      MSE(e, sg[t]), with e = H E the chosen code.
    The weight follows vqexplore's (and the VQ-VAE paper's) convention, beta on the commitment
    term; the official code, after taming-transformers' legacy default, puts beta on the codebook
    term instead.

    Args:
        codebook_size: K.  code_dim: D.
        commitment_weight: beta (0.25).
        chunk_size: tokens per chunk (default: ~4M elements of chunk x K on the CPU, ~16M on a GPU).
    The codebook starts N(0, 1), as ``nn.Embedding`` (the official initialisation).
    """

    def __init__(self, codebook_size: int, code_dim: int, *, commitment_weight: float = 0.25,
                 chunk_size: int | None = None):
        super().__init__()
        self.codebook_size, self.code_dim = int(codebook_size), int(code_dim)
        self.commitment_weight, self.chunk_size = float(commitment_weight), chunk_size
        self.embedding = nn.Parameter(torch.randn(self.codebook_size, self.code_dim))

    def codebook_vectors(self) -> Tensor:
        """(K, D) the learned codebook."""
        return self.embedding

    def forward(self, z: Tensor) -> QuantizerOutput:
        # Full precision under autocast too: the argmax and softmax over K codes need it.
        with torch.autocast(z.device.type, enabled=False):
            return self._forward(z)

    def _forward(self, z: Tensor) -> QuantizerOutput:
        tokens = to_tokens(z)
        tokens = tokens if tokens.dtype == torch.float64 else tokens.float()
        codebook = self.embedding.to(tokens.dtype)
        if torch.is_grad_enabled() and (tokens.requires_grad or codebook.requires_grad):
            # soft - sg[soft] with soft = P sg[E]: zero in value, so no softmax is computed in the
            # forward; its gradient reaches the tokens and every code through the logits.
            delta, idx = soft_one_hot_gradient(tokens, codebook, self.chunk_size)
            hard = F.embedding(idx, codebook)
            q = hard + delta
        else:
            idx = max_inner_product(tokens, codebook, self.chunk_size)
            q = hard = F.embedding(idx, codebook)
        losses = {
            "quantization": F.mse_loss(q, tokens),
            "commitment": self.commitment_weight * F.mse_loss(tokens, hard.detach()),
            "codebook": F.mse_loss(hard, tokens.detach()),
        }
        b, _, h, w = z.shape
        return QuantizerOutput(from_tokens(q, z.shape).to(z.dtype), idx.view(b, h, w), losses)
