"""``python -m trainer import {llamagen,taming,diffusers}``: published VQGAN tokenizers as vqexplore
checkpoints (vqexplore/importers).

What is checked, exactly:
- diffusers: a real ``diffusers.VQModel`` (random weights, attention in the encoder, decoder and
  middle) and its import give the same code indices and reconstructions (float32: 1e-5; float64:
  1e-6, the quantizer's float32 rounding). diffusers' VQModel is a port of taming's network, so
  this also runs the taming layer arithmetic (GroupNorm eps, swish, right/bottom padding before
  the stride-2 convolution, nearest upsampling, single-head attention) against code vqexplore did
  not write.
- LlamaGen and taming: their code cannot be installed here, so state dicts with the published key
  names and shapes (tests/helpers/published.py says which file each name comes from) import
  strictly and round-trip through ``vqexplore.load``; spot checks put published tensors where
  their layers are (LlamaGen's decoder counts its levels from the lowest resolution); the
  quantizer conventions are checked against the published formulas written out here: LlamaGen's
  l2-normalised search and decode (``VectorQuantizer.forward`` / ``get_codebook_entry``) and
  taming's ``VectorQuantizer2`` (euclidean argmin, the code itself decoded, legacy beta placement:
  the same loss value as vqexplore's, gradients weighted differently).
"""
from __future__ import annotations

import argparse
import json

import pytest
import torch
import torch.nn.functional as F

import vqexplore
from trainer.cli import main
from vqexplore.importers import ImportError_, convert, import_checkpoint

from helpers.published import llamagen_shapes, random_state, taming_shapes

SMALL = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=16)


def _diffusers_model(seed=0):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(seed)
    m = diffusers.VQModel(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
        up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(32, 64),
        layers_per_block=1, latent_channels=16, num_vq_embeddings=32, vq_embed_dim=4, norm_num_groups=32,
        sample_size=32).eval()
    with torch.no_grad():  # diffusers zero-initialises nothing important, but make every weight count
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def test_diffusers_import_gives_the_same_codes_and_reconstructions(tmp_path, capsys):
    ref = _diffusers_model()
    ref.save_pretrained(tmp_path / "src")
    assert main(["import", "diffusers", str(tmp_path / "src"), "--out", str(tmp_path / "out")]) == 0
    assert "VQGAN f2, 32 codes of dim 4" in capsys.readouterr().out
    ours = vqexplore.load(tmp_path / "out")
    cfg = ours.config
    assert (cfg["ch"], cfg["ch_mult"], cfg["num_res_blocks"], cfg["attn_resolutions"], cfg["resolution"]) == \
        (32, [1, 2], 1, [16], 32)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        h = ref.encode(x).latents
        _, _, (_, _, idx) = ref.quantize(h)
        rec = ref.decode(h).sample
        out = ours(x)
    assert torch.equal(out.indices.flatten(), idx.flatten()) and idx.unique().numel() > 4
    # float32: the two networks sum in different orders, so a rare pixel differs by ~1e-5 (1.2e-5 seen);
    # the equivalence itself is the float64 check below, to 1e-6
    torch.testing.assert_close(out.reconstruction, rec, atol=5e-5, rtol=1e-5)
    torch.testing.assert_close(ours.decode_indices(out.indices), rec, atol=5e-5, rtol=1e-5)
    with torch.no_grad():  # in float64 the networks agree to float32 rounding (vqexplore's quantizer
        ref64, ours64 = ref.double(), ours.double()  # searches and looks codes up in float32)
        rec64 = ref64.decode(ref64.encode(x.double()).latents).sample
        assert (ours64(x.double()).reconstruction - rec64).abs().max() < 1e-6
    card = (tmp_path / "out" / "README.md").read_text()
    assert "converted from a published diffusers checkpoint" in card and "licence" in card


def test_diffusers_import_refuses_what_vqexplore_cannot_hold(tmp_path):
    ref = _diffusers_model()
    ref.save_pretrained(tmp_path / "src")
    cfg = json.loads((tmp_path / "src" / "config.json").read_text())
    (tmp_path / "src" / "config.json").write_text(json.dumps({**cfg, "norm_type": "spatial"}))
    with pytest.raises(ImportError_, match="norm_type 'spatial'"):
        import_checkpoint("diffusers", tmp_path / "src", tmp_path / "out")


def _llamagen_ckpt(path, seed=0, **extra):
    shapes = llamagen_shapes(codebook_size=64, code_dim=8, **SMALL)
    state = random_state(shapes, seed)
    torch.save({"model": state, "steps": 100, "args": argparse.Namespace(codebook_size=64), **extra}, path)
    return state


def test_llamagen_imports_strictly_and_round_trips(tmp_path):
    state = _llamagen_ckpt(tmp_path / "vq.pt")
    res = import_checkpoint("llamagen", tmp_path / "vq.pt", tmp_path / "out", resolution=32)
    assert res.dropped == ["quantize.codebook_used"]
    model = vqexplore.load(tmp_path / "out")
    c = model.config
    assert c["l2_norm"] is True and c["codebook_size"] == 64 and c["code_dim"] == 8
    # LlamaGen: attention on the last (lowest) level only = side 32 / 2 = 16
    assert c["attn_resolutions"] == [16] and model.downsample == 2 and c["resolution"] == 32
    # The decoder's conv_blocks count from the lowest resolution: conv_blocks.0 is level 1 here.
    assert torch.equal(model.decoder.up[1].block[0].conv1.weight, state["decoder.conv_blocks.0.res.0.conv1.weight"])
    assert torch.equal(model.decoder.up[1].attn[1].q.weight, state["decoder.conv_blocks.0.attn.1.q.weight"])
    assert torch.equal(model.decoder.up[1].upsample.conv.bias, state["decoder.conv_blocks.0.upsample.conv.bias"])
    assert torch.equal(model.encoder.mid.attn_1.proj_out.weight, state["encoder.mid.1.proj_out.weight"])
    assert torch.equal(model.pre_quant.weight, state["quant_conv.weight"])

    # LlamaGen's quantizer, from the published formula: tokens and codes l2-normalised, euclidean
    # argmin, the normalised code decoded.
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = model.encode_latents(x).permute(0, 2, 3, 1).reshape(-1, 8)
        zn, e = F.normalize(z, dim=-1), F.normalize(state["quantize.embedding.weight"], dim=-1)
        d = (zn ** 2).sum(1, keepdim=True) + (e ** 2).sum(1) - 2 * zn @ e.t()
        idx = d.argmin(1)
        zq = e[idx].reshape(2, 16, 16, 8).permute(0, 3, 1, 2)
        ref = model.decoder(model.post_quant(zq))
        out = model(x)
    assert torch.equal(out.indices.flatten(), idx)
    torch.testing.assert_close(out.reconstruction, ref, atol=1e-5, rtol=1e-5)


def test_llamagen_l2_flag_and_ema_free_checkpoint(tmp_path):
    _llamagen_ckpt(tmp_path / "vq.pt")
    import_checkpoint("llamagen", tmp_path / "vq.pt", tmp_path / "out", resolution=32, l2_norm=False)
    assert vqexplore.load(tmp_path / "out").config["l2_norm"] is False


def _taming_ckpt(path, seed=0):
    shapes = taming_shapes(n_embed=64, embed_dim=8, attn_resolutions=(16,), resolution=32, **SMALL)
    state = random_state(shapes, seed)
    loss = {"loss.discriminator.main.0.weight": torch.randn(64, 3, 4, 4),
            "loss.perceptual_loss.net.slice1.0.weight": torch.randn(64, 3, 3, 3),
            "loss.perceptual_loss.lin0.model.1.weight": torch.randn(1, 64, 1, 1)}
    torch.save({"state_dict": {**state, **loss}, "epoch": 3, "global_step": 1000,
                "pytorch-lightning_version": "1.0.8", "optimizer_states": [], "lr_schedulers": []}, path)
    return state


def test_taming_imports_strictly_dropping_the_loss(tmp_path):
    state = _taming_ckpt(tmp_path / "last.ckpt")
    res = import_checkpoint("taming", tmp_path / "last.ckpt", tmp_path / "out", resolution=32)
    assert sorted(res.dropped) == sorted(k for k in torch.load(tmp_path / "last.ckpt")["state_dict"]
                                         if k.startswith("loss."))
    model = vqexplore.load(tmp_path / "out")
    assert model.config["l2_norm"] is False and model.config["attn_resolutions"] == [16]
    assert torch.equal(model.decoder.up[0].block[1].conv2.weight, state["decoder.up.0.block.1.conv2.weight"])
    # taming's VectorQuantizer2: euclidean argmin over raw codes, the code decoded; legacy=True
    # loss = mean((zq - z)^2) + beta * mean((zq - z)^2) in value: vqexplore's codebook + commitment.
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = model.encode_latents(x).permute(0, 2, 3, 1).reshape(-1, 8)
        e = state["quantize.embedding.weight"]
        idx = ((z ** 2).sum(1, keepdim=True) + (e ** 2).sum(1) - 2 * z @ e.t()).argmin(1)
        ref = model.decoder(model.post_quant(e[idx].reshape(2, 16, 16, 8).permute(0, 3, 1, 2)))
        model.train()
        out = model(x)
        model.eval()
        mse = ((e[idx] - z) ** 2).mean()
    assert torch.equal(out.indices.flatten(), idx)
    torch.testing.assert_close(out.reconstruction, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.losses["codebook"] + out.losses["commitment"], mse + 0.25 * mse)


def test_a_wrong_or_missing_weight_is_one_error_listing_the_names(tmp_path, capsys):
    shapes = taming_shapes(n_embed=64, embed_dim=8, attn_resolutions=(16,), resolution=32, **SMALL)
    state = random_state(shapes)
    state["encoder.mid.attn_1.extra.weight"] = torch.zeros(3)
    del state["decoder.norm_out.bias"]
    torch.save({"state_dict": state}, tmp_path / "bad.ckpt")
    code = main(["import", "taming", str(tmp_path / "bad.ckpt"), "--out", str(tmp_path / "out"), "--resolution", "32"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: ")
    assert "missing 1 weight(s) vqexplore's VQGAN needs: decoder.norm_out.bias" in err
    assert "1 unexpected weight(s): encoder.mid.attn_1.extra.weight" in err
    assert not (tmp_path / "out").exists()
    # LlamaGen names reported as published
    _llamagen_ckpt(tmp_path / "vq.pt")
    full = torch.load(tmp_path / "vq.pt", weights_only=False)
    full["model"]["decoder.conv_blocks.0.res.0.bogus"] = torch.zeros(1)
    torch.save({"model": full["model"]}, tmp_path / "vq2.pt")
    with pytest.raises(ImportError_, match=r"unexpected weight\(s\): decoder\.conv_blocks\.0\.res\.0\.bogus"):
        import_checkpoint("llamagen", tmp_path / "vq2.pt", tmp_path / "o2", resolution=32)


class Payload:  # anything but tensors and plain containers
    pass


def test_pickled_code_is_never_run_and_out_is_never_overwritten(tmp_path):
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": Payload()}, tmp_path / "evil.ckpt")
    with pytest.raises(ImportError_, match="weights only"):
        import_checkpoint("taming", tmp_path / "evil.ckpt", tmp_path / "out")
    _taming_ckpt(tmp_path / "last.ckpt")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ImportError_, match="not an empty folder"):
        import_checkpoint("taming", tmp_path / "last.ckpt", tmp_path / "full", resolution=32)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_convert_reads_the_architecture_from_shapes_alone():
    shapes = llamagen_shapes(codebook_size=16, code_dim=4, ch=32, ch_mult=(1, 1, 2), num_res_blocks=2, z_channels=8,
                             show_usage=False)
    model, dropped = convert("llamagen", random_state(shapes), resolution=64)
    c = model.config
    assert (c["ch_mult"], c["num_res_blocks"], c["z_channels"], c["attn_resolutions"], model.downsample) == \
        ([1, 1, 2], 2, 8, [16], 4) and dropped == []


def test_an_imported_checkpoint_opens_in_tokenize_and_the_projector(tmp_path):
    """The importer's folder is an ordinary checkpoint: `trainer tokenize` and `trainer export
    --projector` take it unchanged, at its recorded training resolution (32 here: 16 x 16 tokens)."""
    _llamagen_ckpt(tmp_path / "vq.pt")
    assert main(["import", "llamagen", str(tmp_path / "vq.pt"), "--out", str(tmp_path / "ckpt"),
                 "--resolution", "32"]) == 0
    assert main(["tokenize", "--ckpt", str(tmp_path / "ckpt"), "--data", "builtin", "--out", str(tmp_path / "tok"),
                 "--split", "val", "--workers", "0", "--no-progress"]) == 0
    index = json.loads((tmp_path / "tok" / "index.json").read_text())
    assert index["size"] == 32 and index["grid"] == [16, 16] and index["config"]["arch"] == "vqgan"
    assert main(["export", "--projector", "--ckpt", str(tmp_path / "ckpt"), "--out", str(tmp_path / "proj"),
                 "--images", "4"]) == 0
    assert len((tmp_path / "proj" / "codebook.tsv").read_text().splitlines()) == 64


def test_a_lightning_checkpoint_naming_its_callback_classes_imports(tmp_path, monkeypatch):
    """PyTorch Lightning 1.x keys ``callbacks`` by the callback's class, so taming's published
    ``last.ckpt`` names ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``. The
    importer reads it with weights_only=True without Lightning installed (the class becomes an
    inert name); any other class is still refused."""
    import sys
    import types

    fake = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        pass

    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = fake.__name__, "ModelCheckpoint"
    fake.ModelCheckpoint = ModelCheckpoint
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", fake.__name__):
        monkeypatch.setitem(sys.modules, name, fake if name == fake.__name__ else types.ModuleType(name))
    state = _taming_ckpt(tmp_path / "plain.ckpt")
    torch.save({"state_dict": state, "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.1),
                                                                      "best_model_path": "x.ckpt"}}},
               tmp_path / "last.ckpt")
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", fake.__name__):
        monkeypatch.delitem(sys.modules, name)  # Lightning is not installed where the import runs
    import_checkpoint("taming", tmp_path / "last.ckpt", tmp_path / "out", resolution=32)
    assert vqexplore.load(tmp_path / "out").codebook_size == 64
