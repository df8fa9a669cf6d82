"""The VQGAN encoder and decoder of taming-transformers and LlamaGen.

Where the design comes from (read with the project's search tools; no code was copied):

- CompVis/taming-transformers ``taming/modules/diffusionmodules/model.py`` (``Encoder``,
  ``Decoder``, ``ResnetBlock`` with ``temb_channels=0``, ``AttnBlock``, ``Upsample``,
  ``Downsample``, ``Normalize``): GroupNorm with 32 groups and eps 1e-6, swish (SiLU), residual
  blocks ``norm1 -> swish -> conv1 -> norm2 -> swish -> dropout -> conv2`` plus a 1x1
  ``nin_shortcut`` when the width changes, single-head attention over all positions with 1x1
  convolutions ``q``, ``k``, ``v``, ``proj_out`` and scale ``C^-1/2``, downsampling by a stride-2 3x3
  convolution after padding one pixel on the right and bottom only, upsampling by nearest x2 then a
  3x3 convolution. The encoder has ``num_res_blocks`` blocks per level, the decoder
  ``num_res_blocks + 1``; attention follows every block of a level whose feature side
  (``resolution / 2^level``) is in ``attn_resolutions``; the middle is block, attention, block.
  ``taming/models/vqgan.py`` puts ``quant_conv`` / ``post_quant_conv`` (1x1, ``z_channels`` <->
  ``embed_dim``) around the quantizer: :class:`vqexplore.VQModel`'s ``pre_quant`` / ``post_quant``.
- FoundationVision/LlamaGen ``tokenizer/tokenizer_image/vq_model.py``: the same network (its
  ``Encoder`` / ``Decoder`` ``conv_blocks`` hold ``res`` and ``attn`` lists, its ``mid`` is a list of
  block, attention, block) with attention at the lowest resolution only, i.e.
  ``attn_resolutions = [resolution / 2^(len(ch_mult) - 1)]``, which is 16 for VQ-16 at 256 px.

The parameter names here follow taming's (``down.{i}.block.{j}``, ``mid.attn_1``, ``up.{i}``
indexed by level, so ``up.0`` is the full-resolution level); :mod:`vqexplore.importers` maps
LlamaGen's and diffusers' names onto them.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..modelconfig import vqgan_parameters


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """x (or its 1x1 projection) + conv2(dropout(swish(norm2(conv1(swish(norm1(x)))))))."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, groups: int = 32):
        super().__init__()
        self.norm1 = _norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """x + proj_out(softmax(q^T k / sqrt(C)) v): one head over every position of the map."""

    def __init__(self, channels: int, groups: int = 32):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (f(n).reshape(b, 1, c, h * w).transpose(-1, -2) for f in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(c), as the published code
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Halve the side: pad one pixel right and bottom, then a stride-2 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the side: nearest-neighbour x2, then a 3x3 convolution."""

    scale = 2

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Middle(nn.Module):
    def __init__(self, channels: int, dropout: float, groups: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, dropout, groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One resolution: residual blocks, each followed by attention when the level has it."""

    def __init__(self, widths: list[int], attention: bool, dropout: float, groups: int):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(a, b, dropout, groups) for a, b in zip(widths, widths[1:]))
        self.attn = nn.ModuleList(AttnBlock(b, groups) for b in widths[1:]) if attention else nn.ModuleList()

    def forward(self, x: Tensor) -> Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        return x


class VQGANEncoder(nn.Module):
    """(B, in_channels, H, W) -> (B, z_channels, H/f, W/f), f = 2^(len(ch_mult) - 1)."""

    def __init__(self, in_channels: int = 3, ch: int = 128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 attn_resolutions=(16,), z_channels: int = 256, dropout: float = 0.0, resolution: int = 256,
                 norm_groups: int = 32):
        super().__init__()
        self.out_channels = z_channels
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        width, side = ch, resolution
        for level, mult in enumerate(ch_mult):
            widths = [width] + [ch * mult] * num_res_blocks
            stage = _Level(widths, side in attn_resolutions, dropout, norm_groups)
            width = widths[-1]
            if level != len(ch_mult) - 1:
                stage.downsample = Downsample(width)
                side //= 2
            self.down.append(stage)
        self.mid = _Middle(width, dropout, norm_groups)
        self.norm_out = _norm(width, norm_groups)
        self.conv_out = nn.Conv2d(width, z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            h = stage(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class VQGANDecoder(nn.Module):
    """(B, z_channels, h, w) -> (B, out_channels, f h, f w); no output squashing (as published)."""

    def __init__(self, out_channels: int = 3, ch: int = 128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 attn_resolutions=(16,), z_channels: int = 256, dropout: float = 0.0, resolution: int = 256,
                 norm_groups: int = 32):
        super().__init__()
        self.in_channels = z_channels
        width = ch * ch_mult[-1]
        side = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, width, 3, padding=1)
        self.mid = _Middle(width, dropout, norm_groups)
        levels = []
        for level in reversed(range(len(ch_mult))):
            widths = [width] + [ch * ch_mult[level]] * (num_res_blocks + 1)
            stage = _Level(widths, side in attn_resolutions, dropout, norm_groups)
            width = widths[-1]
            if level != 0:
                stage.upsample = Upsample(width)
                side *= 2
            levels.append(stage)
        self.up = nn.ModuleList(reversed(levels))  # up[level]: up[0] is the full resolution
        self.norm_out = _norm(width, norm_groups)
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)

    @property
    def last_layer(self) -> Tensor:
        """The weight of the last convolution (taming's adaptive GAN weight uses its gradients)."""
        return self.conv_out.weight

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            h = stage(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


parameter_count = vqgan_parameters  # computed in the torch-free modelconfig, layer by layer as built here
