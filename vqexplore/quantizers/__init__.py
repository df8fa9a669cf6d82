"""Quantizers: one module per method, the same small interface for all.

Every quantizer is an ``nn.Module`` whose forward takes encoder outputs ``z`` (B, D, H, W) and
returns a :class:`QuantizerOutput` (quantized codes, (B, H, W) ids, named losses). Codebook access
is uniform: ``codebook_size``, ``code_dim``, ``codebook_vectors() -> (K, D)``, ``lookup(ids)`` and
``to_code_space(tokens)``, so analysis code never branches on the quantizer type.

- ``vq``     VectorQuantizer: VQ-VAE with l2 norm, EMA k-means update, entropy regularisation,
             k-means init, dead-code restart and the rotation trick
- ``fsq``    FSQ: finite scalar quantization (implicit codebook)
- ``simvq``  SimVQ: frozen random codebook through one learned linear layer
- ``lfq``    LFQ: lookup-free quantization (MAGVIT-v2), sign per channel, K = 2^d implicit codes
- ``bsq``    BSQ: binary spherical quantization, LFQ on l2-normalised tokens
- ``ibq``    IBQ: index backpropagation, straight-through on the softmax over all codes
- ``search`` the shared chunked nearest-code search, entropy term, IBQ's soft one-hot gradient and k-means
"""
from .base import Quantizer, QuantizerOutput
from .bsq import BSQ
from .fsq import FSQ
from .ibq import IBQ
from .lfq import LFQ
from .search import entropy_and_nearest, entropy_loss, kmeans, nearest_code
from .simvq import SimVQ
from .vq import VectorQuantizer, rotate_to

__all__ = ["Quantizer", "QuantizerOutput", "VectorQuantizer", "FSQ", "SimVQ", "LFQ", "BSQ", "IBQ",
           "nearest_code", "entropy_loss", "entropy_and_nearest", "kmeans", "rotate_to"]
