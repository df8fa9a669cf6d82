"""The autoencoders a :class:`vqexplore.VQModel` can wrap around its quantizer.

- ``simplecnn`` (:mod:`.simplecnn`): the reference study's SimpleCNN, downsampling 4;
- ``vqgan`` (:mod:`.vqgan`): the taming-transformers / LlamaGen VQGAN encoder and decoder,
  downsampling ``2^(len(ch_mult) - 1)``.
"""
from __future__ import annotations

from ..modelconfig import ARCHS, downsample_factor  # noqa: F401  (torch-free, re-exported)
from .simplecnn import Decoder, Encoder, ResBlock
from .vqgan import AttnBlock, ResnetBlock, VQGANDecoder, VQGANEncoder

__all__ = ["ARCHS", "AttnBlock", "Decoder", "Encoder", "ResBlock", "ResnetBlock", "VQGANDecoder", "VQGANEncoder",
           "build", "downsample_factor", "global_layers"]


def build(cfg: dict):
    """(encoder, decoder) of a checked VQModel config; ``encoder.out_channels`` and
    ``decoder.in_channels`` are the widths the 1x1 convolutions to and from the codes meet."""
    c = cfg["in_channels"]
    if cfg["arch"] == "vqgan":
        kw = {k: cfg[k] for k in ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "z_channels", "dropout",
                                  "resolution", "norm_groups")}
        return VQGANEncoder(c, **kw), VQGANDecoder(c, **kw)
    return Encoder(cfg["hidden_dim"], cfg["n_resblocks"], c), Decoder(cfg["hidden_dim"], cfg["n_resblocks"], c)


def global_layers(module) -> list[str]:
    """Names of the layers of ``module`` through which every output position depends on every
    input position: GroupNorm (statistics over the whole map) and attention. Empty for SimpleCNN,
    whose convolutions keep every effect local."""
    from torch import nn

    return [name for name, m in module.named_modules()
            if isinstance(m, (nn.GroupNorm, AttnBlock, nn.LayerNorm, nn.InstanceNorm2d))]
