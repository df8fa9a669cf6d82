"""The VQGAN architecture option of VQModel (vqexplore/nets/vqgan.py)."""
from __future__ import annotations

import pytest
import torch

import vqexplore
from vqexplore import VQModel
from vqexplore.errors import ConfigError
from vqexplore.models import parameter_estimate

from helpers.published import llamagen_shapes, parameter_count, taming_shapes

TINY = dict(arch="vqgan", ch=32, ch_mult=[1, 2], num_res_blocks=1, z_channels=16, resolution=32)


def _count(cfg: dict) -> int:
    with torch.device("meta"):
        model = VQModel(**cfg)
    return sum(p.numel() for p in model.parameters())


# Published counts, from the published code's layer lists (tests/helpers/published.py says which
# file each name comes from): the sum of every parameter's shape, buffers (LlamaGen's
# 65,536-entry codebook_used) left out, as ``sum(p.numel() for p in model.parameters())`` counts.
# LlamaGen VQ-16: encoder 29,298,176 + decoder 42,449,795 + quant_conv 2,056 + post_quant_conv 2,304
# + codebook 16,384 x 8 = 71,883,403 (the paper's "72M").
@pytest.mark.parametrize("cfg, published, expected", [
    (dict(codebook_size=16384, code_dim=8, l2_norm=True), llamagen_shapes(), 71_883_403),
    (dict(codebook_size=1024, code_dim=256), taming_shapes(n_embed=1024), 72_141_699),
    (dict(codebook_size=16384, code_dim=256), taming_shapes(n_embed=16384), 76_073_859),
])
def test_parameter_count_equals_the_published_models(cfg, published, expected):
    assert parameter_count(published) == expected
    assert _count(dict(arch="vqgan", **cfg)) == expected
    with torch.device("meta"):
        model = VQModel(arch="vqgan", **cfg)
    assert model.downsample == 16 and model.config["attn_resolutions"] == [16]
    parts = parameter_estimate(model._config)  # the size guard's count, from the config alone
    network = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("quantizer."))
    assert parts["network"] == network


def test_shapes_at_any_resolution_and_downsample():
    torch.manual_seed(0)
    model = VQModel(quantizer="vq", codebook_size=64, code_dim=4, **TINY).eval()
    assert model.downsample == model.downsample_factor == 2 and model.resolution == 32
    for h, w in ((32, 32), (16, 48)):
        out = model(torch.rand(2, 3, h, w) * 2 - 1)
        assert out.reconstruction.shape == (2, 3, h, w) and out.indices.shape == (2, h // 2, w // 2)
    with pytest.raises(ValueError, match="multiples of 2"):
        model(torch.rand(1, 3, 33, 32))
    deep = VQModel(quantizer="fsq", levels=[4, 4], **{**TINY, "ch_mult": [1, 1, 2], "resolution": 64})
    assert deep.downsample == 4 and deep.encode(torch.zeros(1, 3, 64, 64)).shape == (1, 16, 16)


@pytest.mark.parametrize("quantizer", ["vq", "fsq", "simvq", "lfq", "bsq", "ibq"])
def test_every_quantizer_trains_between_vqgan_encoder_and_decoder(quantizer):
    cfg = dict(levels=[4, 4, 3]) if quantizer == "fsq" else dict(codebook_size=16, code_dim=None)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    if quantizer in ("vq", "simvq", "ibq"):
        cfg["code_dim"] = 4
    torch.manual_seed(0)
    model = VQModel(quantizer=quantizer, **cfg, **TINY)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    out = model(x)
    loss = (out.reconstruction - x).pow(2).mean() + sum(out.losses.values())
    loss.backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert model.pre_quant.in_channels == 16 and model.post_quant.out_channels == 16


def test_attention_is_the_published_formula():
    """softmax(q^T k / sqrt(C)) v over all positions, one head, plus the input."""
    from vqexplore.nets.vqgan import AttnBlock
    torch.manual_seed(0)
    block = AttnBlock(32, groups=8)
    x = torch.randn(2, 32, 3, 5)
    n = block.norm(x)
    q, k, v = (f(n).flatten(2) for f in (block.q, block.k, block.v))          # (b, c, hw)
    w = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / 32 ** 0.5, dim=2)  # (b, hw_q, hw_k)
    h = torch.einsum("bcj,bij->bci", v, w).reshape(2, 32, 3, 5)
    torch.testing.assert_close(block(x), x + block.proj_out(h), atol=1e-5, rtol=1e-5)


def test_config_json_round_trip(tmp_path):
    torch.manual_seed(0)
    model = VQModel(quantizer="vq", codebook_size=32, code_dim=4, l2_norm=True, **TINY).eval()
    model.save_pretrained(tmp_path / "ckpt")
    import json
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["arch"] == "vqgan" and saved["ch_mult"] == [1, 2] and "hidden_dim" not in saved
    loaded = vqexplore.load(tmp_path / "ckpt")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(loaded.encode(x), model.encode(x))
    simple = json.loads(_save(VQModel(hidden_dim=8), tmp_path / "simple"))
    assert simple["arch"] == "simplecnn" and "ch" not in simple and "z_channels" not in simple


def _save(model, path):
    model.save_pretrained(path)
    return (path / "config.json").read_text()


@pytest.mark.parametrize("cfg, key", [
    (dict(arch="vqgan", hidden_dim=64), "hidden_dim"),
    (dict(ch=64), "ch"),
    (dict(arch="unet"), "arch"),
    (dict(arch="vqgan", ch_mult=[]), "ch_mult"),
    (dict(arch="vqgan", ch_mult=[1, 0]), "ch_mult[1]"),
    (dict(arch="vqgan", resolution=100), "resolution"),
    (dict(arch="vqgan", attn_resolutions=[24]), "attn_resolutions[0]"),
    (dict(arch="vqgan", ch=48), "norm_groups"),
    (dict(arch="vqgan", dropout=1.0), "dropout"),
    (dict(arch="vqgan", ch=2 ** 20), "ch"),
])
def test_bad_vqgan_configs_name_the_key(cfg, key):
    with pytest.raises(ConfigError) as e:
        VQModel.check_config(cfg)
    assert e.value.key == key


def test_surgery_footprint_of_a_vqgan_decoder_is_the_whole_image():
    """GroupNorm and attention let one token reach every pixel: the footprint says so, and the
    edit really changes pixels far outside what the decoder's convolutions alone would reach."""
    from vqexplore import surgery
    torch.manual_seed(0)
    model = VQModel(quantizer="vq", codebook_size=32, code_dim=4, **{**TINY, "ch_mult": [1, 1, 2], "resolution": 64})
    model.eval()
    with torch.no_grad():
        model.quantizer.embedding.normal_(0, 1)
    ids = torch.randint(0, 32, (16, 16)).numpy()
    assert not surgery.decoder_is_local(model)
    simple = VQModel(quantizer="vq", codebook_size=32, code_dim=4, hidden_dim=8)
    assert surgery.decoder_is_local(simple)
    res = surgery.token_surgery(model, ids, [(0, 0)], int((ids[0, 0] + 1) % 32))
    assert res.footprint.shape == (64, 64) and res.footprint.all()
    assert res.changed[32:, 32:].any()  # the far corner, 8 tokens away from the edited one
    assert (res.changed & ~res.footprint).sum() == 0
