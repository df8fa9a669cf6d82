"""Binary spherical quantization (BSQ, Zhao et al. 2024): LFQ on the unit sphere."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .lfq import LFQ


class BSQ(LFQ):
    """Binary spherical quantization: tokens are l2-normalised, then each channel quantized to its
    sign on the scaled hypercube {-1/sqrt(d), 1/sqrt(d)}^d, so codes are unit vectors too.

    Same arguments, losses and index bit order as :class:`LFQ`; values, ids and losses equal
    ``vector_quantize_pytorch.LFQ(spherical=True)``. The entropy term uses the normalised tokens
    and codes, and the straight-through gradient flows through the normalisation.
    """

    spherical = True

    def to_code_space(self, tokens: Tensor) -> Tensor:
        """(N, d) encoder outputs -> unit vectors, where the codes live."""
        return F.normalize(tokens, dim=1)
