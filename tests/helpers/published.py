"""State-dict names and shapes of the published VQGAN tokenizers, written out layer by layer from
their published code (read with the project's search tools; the checkpoints themselves are not
downloadable here), so tests can build checkpoints with exactly those names and count parameters
the way the published models do.

- LlamaGen (FoundationVision/LlamaGen, ``tokenizer/tokenizer_image/vq_model.py``): ``VQModel`` holds
  ``encoder``, ``decoder``, ``quantize`` (``embedding.weight`` (K, D) and, with
  ``codebook_show_usage`` (default True), a buffer ``codebook_used`` of 65,536 entries),
  ``quant_conv`` and ``post_quant_conv``. ``Encoder``: ``conv_in``, ``conv_blocks.{level}`` with
  ``res.{j}`` (``num_res_blocks`` ``ResnetBlock``s: ``norm1``, ``conv1``, ``norm2``, ``conv2``,
  ``nin_shortcut`` when the width changes), ``attn.{j}`` (``AttnBlock``: ``norm``, ``q``, ``k``, ``v``,
  ``proj_out``; only on the last level) and ``downsample.conv`` (all levels but the last), ``mid.0``
  / ``mid.1`` / ``mid.2`` (block, attention, block), ``norm_out``, ``conv_out`` (to ``z_channels``).
  ``Decoder``: ``conv_in``, ``mid.{0,1,2}``, ``conv_blocks.{k}`` for the levels from the lowest
  resolution up (``k = 0`` is the lowest, with attention), ``num_res_blocks + 1`` blocks each,
  ``upsample.conv`` on all but the last, ``norm_out``, ``conv_out``. ``VQ_16``: ``ch_mult``
  [1, 1, 2, 2, 4]; ``ModelArgs``: K 16,384, D 8, ``codebook_l2_norm`` True, ``z_channels`` 256; the
  blocks' default ``ch`` 128 and ``num_res_blocks`` 2.
- taming-transformers (CompVis/taming-transformers; ``taming/models/vqgan.py`` ``VQModel``,
  ``taming/modules/diffusionmodules/model.py`` ``Encoder`` / ``Decoder``, ``configs/imagenet_vqgan.yaml``):
  ``encoder.down.{level}.block.{j}`` / ``.attn.{j}`` (attention where the side is in
  ``attn_resolutions``) / ``.downsample.conv``, ``encoder.mid.block_1`` / ``attn_1`` / ``block_2``,
  ``norm_out``, ``conv_out``; ``decoder.up.{level}`` indexed by level (``up.0`` the full resolution),
  ``num_res_blocks + 1`` blocks, ``upsample.conv`` on levels > 0; ``quantize.embedding.weight``
  (``VectorQuantizer2``), ``quant_conv``, ``post_quant_conv``. The Lightning checkpoint's
  ``state_dict`` also holds the loss (``loss.perceptual_loss.*``: LPIPS on VGG16;
  ``loss.discriminator.*``: the PatchGAN). f16 ImageNet: ch 128, ch_mult [1, 1, 2, 2, 4],
  num_res_blocks 2, attn_resolutions [16], z_channels 256, resolution 256, embed_dim 256,
  n_embed 1,024 (or 16,384 for the second published model).
"""
from __future__ import annotations

import torch


def _conv(out: dict, name: str, cin: int, cout: int, k: int) -> None:
    out[f"{name}.weight"] = (cout, cin, k, k)
    out[f"{name}.bias"] = (cout,)


def _norm(out: dict, name: str, c: int) -> None:
    out[f"{name}.weight"] = (c,)
    out[f"{name}.bias"] = (c,)


def _res(out: dict, name: str, cin: int, cout: int) -> None:
    _norm(out, f"{name}.norm1", cin)
    _conv(out, f"{name}.conv1", cin, cout, 3)
    _norm(out, f"{name}.norm2", cout)
    _conv(out, f"{name}.conv2", cout, cout, 3)
    if cin != cout:
        _conv(out, f"{name}.nin_shortcut", cin, cout, 1)


def _attn(out: dict, name: str, c: int) -> None:
    _norm(out, f"{name}.norm", c)
    for part in ("q", "k", "v", "proj_out"):
        _conv(out, f"{name}.{part}", c, c, 1)


def llamagen_shapes(codebook_size=16384, code_dim=8, ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
                    z_channels=256, show_usage=True) -> dict[str, tuple]:
    """name -> shape of LlamaGen's ``VQModel.state_dict()`` (parameters, and the usage buffer)."""
    out: dict[str, tuple] = {}
    n = len(ch_mult)
    _conv(out, "encoder.conv_in", 3, ch, 3)
    width = ch
    for level, mult in enumerate(ch_mult):
        for j in range(num_res_blocks):
            _res(out, f"encoder.conv_blocks.{level}.res.{j}", width, ch * mult)
            width = ch * mult
            if level == n - 1:
                _attn(out, f"encoder.conv_blocks.{level}.attn.{j}", width)
        if level != n - 1:
            _conv(out, f"encoder.conv_blocks.{level}.downsample.conv", width, width, 3)
    for p, part in (("encoder", "mid.0"), ("encoder", "mid.2")):
        _res(out, f"{p}.{part}", width, width)
    _attn(out, "encoder.mid.1", width)
    _norm(out, "encoder.norm_out", width)
    _conv(out, "encoder.conv_out", width, z_channels, 3)
    top = ch * ch_mult[-1]
    _conv(out, "decoder.conv_in", z_channels, top, 3)
    _res(out, "decoder.mid.0", top, top)
    _attn(out, "decoder.mid.1", top)
    _res(out, "decoder.mid.2", top, top)
    width = top
    for k, level in enumerate(reversed(range(n))):
        for j in range(num_res_blocks + 1):
            _res(out, f"decoder.conv_blocks.{k}.res.{j}", width, ch * ch_mult[level])
            width = ch * ch_mult[level]
            if level == n - 1:
                _attn(out, f"decoder.conv_blocks.{k}.attn.{j}", width)
        if level != 0:
            _conv(out, f"decoder.conv_blocks.{k}.upsample.conv", width, width, 3)
    _norm(out, "decoder.norm_out", width)
    _conv(out, "decoder.conv_out", width, 3, 3)
    out["quantize.embedding.weight"] = (codebook_size, code_dim)
    if show_usage:
        out["quantize.codebook_used"] = (65536,)
    _conv(out, "quant_conv", z_channels, code_dim, 1)
    _conv(out, "post_quant_conv", code_dim, z_channels, 1)
    return out


def taming_shapes(n_embed=1024, embed_dim=256, ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
                  attn_resolutions=(16,), z_channels=256, resolution=256) -> dict[str, tuple]:
    """name -> shape of taming's ``VQModel.state_dict()`` without the loss."""
    out: dict[str, tuple] = {}
    n = len(ch_mult)
    _conv(out, "encoder.conv_in", 3, ch, 3)
    width, side = ch, resolution
    for level, mult in enumerate(ch_mult):
        for j in range(num_res_blocks):
            _res(out, f"encoder.down.{level}.block.{j}", width, ch * mult)
            width = ch * mult
            if side in attn_resolutions:
                _attn(out, f"encoder.down.{level}.attn.{j}", width)
        if level != n - 1:
            _conv(out, f"encoder.down.{level}.downsample.conv", width, width, 3)
            side //= 2
    for p in ("encoder", "decoder"):
        top = ch * ch_mult[-1]
        if p == "decoder":
            _conv(out, "decoder.conv_in", z_channels, top, 3)
        _res(out, f"{p}.mid.block_1", top, top)
        _attn(out, f"{p}.mid.attn_1", top)
        _res(out, f"{p}.mid.block_2", top, top)
        if p == "encoder":
            _norm(out, "encoder.norm_out", top)
            _conv(out, "encoder.conv_out", top, z_channels, 3)
    width = ch * ch_mult[-1]
    for level in reversed(range(n)):
        for j in range(num_res_blocks + 1):
            _res(out, f"decoder.up.{level}.block.{j}", width, ch * ch_mult[level])
            width = ch * ch_mult[level]
            if side in attn_resolutions:
                _attn(out, f"decoder.up.{level}.attn.{j}", width)
        if level != 0:
            _conv(out, f"decoder.up.{level}.upsample.conv", width, width, 3)
            side *= 2
    _norm(out, "decoder.norm_out", width)
    _conv(out, "decoder.conv_out", width, 3, 3)
    out["quantize.embedding.weight"] = (n_embed, embed_dim)
    _conv(out, "quant_conv", z_channels, embed_dim, 1)
    _conv(out, "post_quant_conv", embed_dim, z_channels, 1)
    return out


BUFFERS = {"quantize.codebook_used"}  # LlamaGen's usage buffer: in the state dict, not a parameter


def parameter_count(shapes: dict[str, tuple]) -> int:
    """What ``sum(p.numel() for p in model.parameters())`` gives for the published model."""
    total = 0
    for name, shape in shapes.items():
        if name not in BUFFERS:
            total += int(torch.Size(shape).numel())
    return total


def random_state(shapes: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of these shapes (GroupNorm scales near 1, so activations stay sane)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if name == "quantize.codebook_used":
            out[name] = torch.zeros(shape)
        elif len(shape) == 1 and ("norm" in name and name.endswith(".weight")):
            out[name] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            out[name] = torch.randn(shape, generator=g) / fan_in ** 0.5
        else:
            out[name] = 0.1 * torch.randn(shape, generator=g)
    return out
