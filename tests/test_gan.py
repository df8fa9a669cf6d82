"""The VQGAN stage's library pieces (vqexplore.gan) on hand-made cases, and the trainer around
them: config checks, the generator/discriminator step, checkpoints that hold the discriminator,
export without it, the Training page's panels, the CPU VQGAN row end to end."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from helpers.trainer_runs import ROOT, write_config
from trainer import cli
from trainer.config import load_config
from vqexplore import analysis
from vqexplore.errors import ConfigError, MissingWeightsError
from vqexplore.gan import (PatchDiscriminator, PerceptualLoss, adaptive_weight, discriminator_loss, generator_loss,
                           last_layer)
from vqexplore.hub import list_checkpoints, read_run_metrics

REAL = torch.tensor([2.0, 0.5, -1.0])
FAKE = torch.tensor([-2.0, 0.0, 1.5])


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# ---------------------------------------------------------------------------------------------
# Losses on known logits
# ---------------------------------------------------------------------------------------------

def test_hinge_losses_on_known_logits():
    # D: 0.5 * (mean relu(1 - real) + mean relu(1 + fake)) = 0.5 * ((0 + 0.5 + 2) / 3 + (0 + 1 + 2.5) / 3) = 1
    assert float(discriminator_loss(REAL, FAKE, "hinge")) == pytest.approx(1.0)
    # G: -mean(fake) = -(-2 + 0 + 1.5) / 3
    assert float(generator_loss(FAKE, "hinge")) == pytest.approx(0.5 / 3)
    # A discriminator sure of itself (real >= 1, fake <= -1) has no hinge loss left.
    assert float(discriminator_loss(torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -5.0]), "hinge")) == 0.0


def test_non_saturating_losses_on_known_logits():
    real = sum(_softplus(-r) for r in REAL.tolist()) / 3     # -log sigmoid(real)
    fake = sum(_softplus(f) for f in FAKE.tolist()) / 3      # -log(1 - sigmoid(fake))
    assert float(discriminator_loss(REAL, FAKE, "non-saturating")) == pytest.approx(0.5 * (real + fake))
    g = sum(_softplus(-f) for f in FAKE.tolist()) / 3        # -log sigmoid(fake): the non-saturating G loss
    assert float(generator_loss(FAKE, "non-saturating")) == pytest.approx(g)
    # Logit 0 is a coin toss: log 2 per term.
    zero = torch.zeros(4)
    assert float(discriminator_loss(zero, zero, "non-saturating")) == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="hinge, non-saturating"):
        generator_loss(FAKE, "wgan")


# ---------------------------------------------------------------------------------------------
# Adaptive weight
# ---------------------------------------------------------------------------------------------

def test_adaptive_weight_equals_its_formula_on_a_hand_made_case():
    # A "last layer" w of shape (1, 1, 1, 2); nll = 3 w0 + 4 w1 (gradient (3, 4), norm 5),
    # g = w0 - w1 (gradient (1, -1), norm sqrt 2): weight = adv * 5 / (sqrt 2 + 1e-4).
    w = torch.tensor([[[[0.3, -0.7]]]], requires_grad=True)
    nll = 3 * w[0, 0, 0, 0] + 4 * w[0, 0, 0, 1]
    g = w[0, 0, 0, 0] - w[0, 0, 0, 1]
    value = adaptive_weight(nll, g, w, adv_weight=0.5)
    assert float(value) == pytest.approx(0.5 * 5 / (math.sqrt(2) + 1e-4), rel=1e-6)
    assert not value.requires_grad
    # Both graphs are kept for the backward pass that follows.
    (nll + value * g).backward()
    assert w.grad.flatten().tolist() == pytest.approx([3 + float(value), 4 - float(value)])
    # Clamped to 1e4 (times the adversarial weight) when the adversarial gradient vanishes.
    w2 = torch.tensor([[[[1.0, 2.0]]]], requires_grad=True)
    assert float(adaptive_weight((w2 * 10).sum(), (w2 * 0).sum(), w2, adv_weight=2.0)) == pytest.approx(2e4)


def test_last_layer_is_the_decoders_output_convolution():
    from vqexplore import VQModel

    model = VQModel(codebook_size=8, code_dim=4, hidden_dim=8, n_resblocks=1)
    layer = last_layer(model)
    assert layer is model.decoder.net[-2].weight  # ConvTranspose(hidden/2 -> 3)
    wrapper = nn.Module()
    wrapper.module = model  # as DDP holds it
    assert last_layer(wrapper) is layer


# ---------------------------------------------------------------------------------------------
# Discriminator and perceptual loss
# ---------------------------------------------------------------------------------------------

def test_patch_discriminator_is_tamings_nlayer_discriminator():
    disc = PatchDiscriminator()
    # taming's NLayerDiscriminator(input_nc=3, ndf=64, n_layers=3): 3,136 + 131,072 + 256 + 524,288 + 512
    # + 2,097,152 + 1,024 + 8,193 parameters (convs after the first without bias, BatchNorm after them).
    assert sum(p.numel() for p in disc.parameters()) == 2_765_633
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0], c.bias is not None) for c in convs] == [
        (3, 64, 2, True), (64, 128, 2, False), (128, 256, 2, False), (256, 512, 1, False), (512, 1, 1, True)]
    # 256 px -> 30 x 30 patch logits; 64 px -> 6 x 6.
    assert disc(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    assert PatchDiscriminator(width=8, n_layers=2)(torch.zeros(2, 3, 64, 64)).shape == (2, 1, 14, 14)
    bn = [m for m in disc.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(float(m.bias.detach().abs().max()) == 0 for m in bn)
    assert 0.01 < float(convs[1].weight.detach().std()) < 0.03  # N(0, 0.02)


def test_perceptual_loss_with_a_random_trunk():
    loss = PerceptualLoss(pretrained_backbone=False)
    assert not any(p.requires_grad for p in loss.parameters())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    assert float(loss(x, x).detach()) == pytest.approx(0.0, abs=1e-6)
    value = loss(x, y)
    value.backward()
    assert value.dim() == 0 and float(value.detach()) > 0 and float(y.grad.abs().sum()) > 0
    assert not loss.train().training  # stays in eval mode


def test_perceptual_loss_offline_is_one_clear_error(tmp_path, monkeypatch):
    import vqexplore.metrics as metrics

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(metrics, "url_reachable", lambda url, timeout=3.0: False)  # the network, mocked: offline
    with pytest.raises(MissingWeightsError) as e:
        PerceptualLoss()
    text = str(e.value)
    assert "vgg16-397923af.pth" in text and str(tmp_path / "torch" / "hub" / "checkpoints") in text
    assert "loss.lpips_weight=0" in text and "\n" not in text


def test_trainer_without_lpips_weights_says_how_to_run_without_the_loss(tmp_path, monkeypatch, capsys):
    import vqexplore.metrics as metrics

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(metrics, "url_reachable", lambda url, timeout=3.0: False)  # the network, mocked: offline
    cfg = write_config(tmp_path / "p.yaml", "p", tmp_path / "runs")
    rc = cli.main(["--cfg", str(cfg), "loss.lpips_weight=1.0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1, err
    assert err[0].startswith("error:") and "vgg16-397923af.pth" in err[0] and "loss.lpips_weight=0" in err[0]


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("loss.disc_loss=wgan", "loss.disc_loss: must be hinge or non-saturating"),
    ("loss.recon=l3", "loss.recon: must be mse or l1"),
    ("loss.adv_weight=-1", "loss.adv_weight: must be a number >= 0"),
    ("loss.disc_start=-5", "loss.disc_start: must be >= 0"),
    ("loss.disc_betas=[0.5]", "loss.disc_betas: must be two numbers"),
    ("train.betas=[0.9,1.5]", "train.betas: must be two numbers"),
    ("loss.disc_layers=0", "loss.disc_layers: must lie in [1, 6]"),
    ("loss.adv_wieght=1", "did you mean adv_weight"),
])
def test_loss_section_is_checked(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(ROOT / "configs" / "cpu" / "default.yaml", [override])


def test_imagenet256_rows_are_the_published_ones():
    rows = {p.stem: load_config(p, ["data.train=builtin", "data.val=builtin"])
            for p in sorted((ROOT / "configs" / "imagenet256").glob("*.yaml"))}
    assert set(rows) == {"vqgan-llamagen", "vqgan-taming"}
    ll, tm = rows["vqgan-llamagen"], rows["vqgan-taming"]
    # configs/imagenet256/vqgan-llamagen.yaml of xyfJASON/visual-tokenizer-pytorch
    assert (ll.model.codebook_size, ll.model.code_dim, ll.model.l2_norm, ll.model.commitment_weight) == \
        (16384, 8, True, 0.25)
    assert (ll.loss.recon, ll.loss.lpips_weight, ll.loss.adv_weight, ll.loss.disc_start, ll.loss.adaptive_weight) == \
        ("mse", 1.0, 0.5, 20000, False)
    assert (ll.train.batch_size, ll.train.steps, ll.train.lr, ll.train.betas, ll.train.grad_clip) == \
        (128, 400000, 1e-4, [0.9, 0.95], 1.0)
    assert (ll.loss.disc_lr, ll.loss.disc_betas, ll.data.size) == (1e-4, [0.9, 0.95], 256)
    # configs/imagenet256/vqgan-taming.yaml
    assert (tm.model.codebook_size, tm.model.code_dim, tm.model.l2_norm) == (1024, 256, False)
    assert (tm.loss.recon, tm.loss.lpips_weight, tm.loss.adv_weight, tm.loss.disc_start, tm.loss.adaptive_weight) == \
        ("l1", 1.0, 0.8, 250000, True)
    assert (tm.train.batch_size, tm.train.steps, tm.train.lr, tm.train.betas, tm.train.grad_clip) == \
        (12, 1000000, 5.4e-5, [0.5, 0.9], 0.0)
    assert (tm.loss.disc_lr, tm.loss.disc_betas) == (5.4e-5, [0.5, 0.9])


# ---------------------------------------------------------------------------------------------
# The trainer: steps, logs, checkpoints, export
# ---------------------------------------------------------------------------------------------

GAN = {"adv_weight": 0.5, "disc_start": 4, "adaptive_weight": True, "disc_width": 8, "disc_layers": 2}


def test_gan_run_logs_its_losses_and_checkpoints_the_discriminator(tmp_path, capsys):
    cfg = write_config(tmp_path / "g.yaml", "g", tmp_path / "runs", loss=GAN,
                       train={"grad_clip": 1.0, "ema_decay": 0.9})
    assert cli.main(["--cfg", str(cfg)]) == 0, capsys.readouterr().err
    run = tmp_path / "runs" / "g"
    rows = [r for r in read_run_metrics(run) if r["split"] == "train"]
    gan_keys = ("gen_loss", "disc_loss", "logits_real", "logits_fake", "adaptive_weight")
    # The adversarial stage starts at step 4 (0-based): the rows for steps 1-4 have no discriminator.
    assert [r["step"] for r in rows if "disc_loss" in r] == [6, 8, 10, 12]
    assert not any(k in rows[1] for k in gan_keys)
    for key in gan_keys:
        assert key in rows[-1] and math.isfinite(rows[-1][key]), key
    assert rows[-1]["adaptive_weight"] > 0 and rows[-1]["gen_loss"] == pytest.approx(-rows[-1]["logits_fake"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/gen_loss", "train/disc_loss", "train/logits_real", "train/adaptive_weight"} <= tags

    final = list_checkpoints(run)[-1][1]
    from safetensors.torch import load_file

    disc = load_file(str(final / "discriminator.safetensors"))
    assert "main.0.weight" in disc and "main.3.running_mean" in disc
    state = load_file(str(final / "trainer_state.safetensors"))
    assert any(k.startswith("disc_optimizer.") for k in state)
    assert "disc_optimizer" in json.loads((final / "trainer_state.json").read_text())

    # export writes the tokenizer only; vqexplore.load opens the run and the export.
    out = tmp_path / "export"
    assert cli.main(["export", "--ckpt", str(run), "--to", str(out)]) == 0
    assert not (out / "discriminator.safetensors").exists() and not (out / "trainer_state.safetensors").exists()
    import vqexplore

    for path in (run, out):
        model = vqexplore.load(path)
        assert model(torch.zeros(1, 3, 16, 16)).reconstruction.shape == (1, 3, 16, 16)


def test_training_page_plots_the_adversarial_curves_in_their_own_panel():
    rows = [{"step": s, "split": "train", "loss": 0.1, "recon_loss": 0.05, "gen_loss": -0.3, "disc_loss": 0.9,
             "logits_real": 0.4, "logits_fake": 0.3, "adaptive_weight": 0.2, "usage": 0.5} for s in (1, 2)]
    groups = analysis.curve_groups(analysis.training_curves(rows=rows))
    assert groups["losses"] == ["loss", "recon_loss"]  # still positive: log scale kept
    assert groups["adversarial"] == ["gen_loss", "disc_loss", "logits_real", "logits_fake"]
    assert groups["adaptive_weight"] == ["adaptive_weight"]
    from vqexplore import plots

    fig = plots.training_curves(analysis.training_curves(rows=rows))
    assert fig.layout.yaxis.type == "log"


def test_cpu_vqgan_row_trains_end_to_end(tmp_path, capsys):
    rows = sorted((ROOT / "configs" / "cpu").glob("vqgan-*.yaml"))
    assert len(rows) == 1
    cfg = load_config(rows[0])
    assert (cfg.data.train, cfg.data.size, cfg.loss.lpips_weight) == ("photos", 64, 0.0)
    assert cfg.loss.adv_weight > 0 and cfg.loss.disc_start == cfg.train.steps // 2
    # The row as shipped, shortened (same shape: the adversarial stage from halfway).
    steps = 8
    rc = cli.main(["--cfg", str(rows[0]), f"out_dir={tmp_path}", f"train.steps={steps}",
                   f"loss.disc_start={steps // 2}", "train.log_every=2", "train.ckpt_every=0", "train.val_every=0",
                   "train.val_images=8"])
    assert rc == 0, capsys.readouterr().err
    run = tmp_path / cfg.name
    rows_ = [r for r in read_run_metrics(run) if r["split"] == "train"]
    assert [("disc_loss" in r) for r in rows_] == [False, False, True, True]
    import vqexplore

    model = vqexplore.load(run)
    assert model(torch.zeros(1, 3, 64, 64)).reconstruction.shape == (1, 3, 64, 64)


def test_init_from_starts_from_a_trained_tokenizer(tmp_path, capsys):
    src = write_config(tmp_path / "src.yaml", "src", tmp_path / "runs", train={"steps": 3, "ckpt_every": 3})
    assert cli.main(["--cfg", str(src)]) == 0, capsys.readouterr().err
    import vqexplore

    trained = vqexplore.load(tmp_path / "runs" / "src")
    # Another model: one error naming the key that differs.
    cfg = write_config(tmp_path / "ft.yaml", "ft", tmp_path / "runs", loss=GAN,
                       train={"steps": 1, "ckpt_every": 1, "lr": 1e-9, "init_from": str(tmp_path / "runs" / "src")})
    capsys.readouterr()
    assert cli.main(["--cfg", str(cfg), "model.codebook_size=64"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.init_from" in err[0] and "model.codebook_size = 32" in err[0], err
    # The same model: one step at lr 1e-9 leaves the trained weights (Adam moves each by ~lr).
    assert cli.main(["--cfg", str(cfg)]) == 0, capsys.readouterr().err
    tuned = vqexplore.load(tmp_path / "runs" / "ft")
    for (name, a), b in zip(trained.state_dict().items(), tuned.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
