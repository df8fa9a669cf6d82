"""The VQGAN stage's losses: perceptual (LPIPS, VGG), a PatchGAN discriminator, hinge and
non-saturating adversarial losses, and taming's adaptive weight.

What each piece follows (facts read from CompVis/taming-transformers,
``taming/modules/discriminator/model.py`` and ``taming/modules/losses/vqperceptual.py``):

- :class:`PatchDiscriminator` is taming's ``NLayerDiscriminator`` (itself pix2pix's PatchGAN):
  a stride-2 4x4 conv (no norm) and LeakyReLU(0.2), ``n_layers - 1`` more stride-2 4x4 convs with
  BatchNorm, widths ``width * min(2^n, 8)``, one stride-1 4x4 conv with BatchNorm, and a stride-1
  4x4 conv to one logit per patch; convs after the first have no bias (BatchNorm follows them).
  Initialisation as taming's ``weights_init``: conv weights N(0, 0.02) (biases: PyTorch's
  default), BatchNorm scales N(1, 0.02) and shifts 0. With ``width=64, n_layers=3`` it has 2,765,633 parameters.
- Hinge: D loss ``0.5 * (mean relu(1 - real) + mean relu(1 + fake))``, G loss ``-mean fake``.
  Non-saturating ("vanilla"): D loss ``0.5 * (mean softplus(-real) + mean softplus(fake))``, G
  loss ``mean softplus(-fake)`` (= -log sigmoid(fake), the non-saturating generator loss).
- Adaptive weight: ``||grad_last(nll)|| / (||grad_last(g_loss)|| + 1e-4)``, clamped to
  [0, 1e4], detached, times the adversarial weight, where ``last`` is the decoder's last layer
  and ``nll`` the reconstruction (+ perceptual) loss.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import MissingWeightsError
from .modelconfig import GAN_LOSSES  # noqa: F401  (checked by run configs without torch)

ADAPTIVE_EPS = 1e-4
ADAPTIVE_MAX = 1e4
LPIPS_VGG_FILE = "vgg16-397923af.pth"


class PatchDiscriminator(nn.Module):
    """PatchGAN: (B, 3, H, W) in [-1, 1] -> (B, 1, h, w) logits, one per overlapping patch."""

    def __init__(self, in_channels: int = 3, width: int = 64, n_layers: int = 3):
        super().__init__()
        if width < 1 or n_layers < 1:
            raise ValueError(f"PatchDiscriminator: width and n_layers must be >= 1, got {width}, {n_layers}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(width * prev, width * mult, 4, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(width * mult), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(width * mult, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)  # biases keep PyTorch's default, as in taming
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


# ---------------------------------------------------------------------------------------------
# Adversarial losses
# ---------------------------------------------------------------------------------------------

def _check_kind(kind: str) -> None:
    if kind not in GAN_LOSSES:
        raise ValueError(f"adversarial loss must be one of {', '.join(GAN_LOSSES)}, got {kind!r}")


def discriminator_loss(logits_real: Tensor, logits_fake: Tensor, kind: str = "hinge") -> Tensor:
    """The discriminator's loss on logits of real and reconstructed images (scalar)."""
    _check_kind(kind)
    real, fake = logits_real.float(), logits_fake.float()
    if kind == "hinge":
        return 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())
    return 0.5 * (F.softplus(-real).mean() + F.softplus(fake).mean())


def generator_loss(logits_fake: Tensor, kind: str = "hinge") -> Tensor:
    """The generator's (tokenizer's) adversarial loss on logits of its reconstructions (scalar)."""
    _check_kind(kind)
    fake = logits_fake.float()
    if kind == "hinge":
        return -fake.mean()
    return F.softplus(-fake).mean()


def last_layer(model: nn.Module) -> Tensor:
    """The weight of the decoder's last layer (``model.decoder.last_layer``, else the last 4-D
    parameter of ``model.decoder``): where taming measures the gradient norms of the adaptive weight."""
    model = getattr(model, "module", model)  # DDP
    if isinstance(getattr(model.decoder, "last_layer", None), Tensor):
        return model.decoder.last_layer
    weights = [p for p in model.decoder.parameters() if p.dim() == 4]
    if not weights:
        raise ValueError("the model's decoder has no convolution weight to measure the adaptive weight on")
    return weights[-1]


def adaptive_weight(nll_loss: Tensor, g_loss: Tensor, layer: Tensor, adv_weight: float = 1.0) -> Tensor:
    """taming's adaptive weight: ``adv_weight * clamp(||d nll/d layer|| / (||d g/d layer|| + 1e-4), 0, 1e4)``,
    detached (a scalar). Both losses keep their graphs (``retain_graph``) for the backward pass."""
    nll_grad = torch.autograd.grad(nll_loss, layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, layer, retain_graph=True)[0]
    ratio = torch.linalg.vector_norm(nll_grad.float()) / (torch.linalg.vector_norm(g_grad.float()) + ADAPTIVE_EPS)
    return (ratio.clamp(0.0, ADAPTIVE_MAX) * adv_weight).detach()


# ---------------------------------------------------------------------------------------------
# Perceptual loss
# ---------------------------------------------------------------------------------------------

class PerceptualLoss(nn.Module):
    """LPIPS with the VGG16 trunk as a training loss: ``forward(x, y)`` on images in [-1, 1] gives
    the mean distance (a scalar, differentiable in both; the network is frozen, in eval mode).

    The linear layers ship inside the ``lpips`` package; the trunk's ImageNet weights are
    torchvision's ``vgg16-397923af.pth``, read from ``weights_path`` or torch's hub cache
    (``$TORCH_HOME/hub/checkpoints``, fetched there on first use when the network allows).
    Offline and missing, one :class:`MissingWeightsError` names the file, where it goes and how
    to train without the loss. ``pretrained_backbone=False``: a random trunk (tests, benches).
    """

    def __init__(self, weights_path: str | Path | None = None, pretrained_backbone: bool = True):
        super().__init__()
        from .metrics import LPIPS, _hub_checkpoints_dir

        try:
            self.lpips = LPIPS(net="vgg", weights_path=weights_path, pretrained_backbone=pretrained_backbone)
        except MissingWeightsError:
            where = Path(weights_path) if weights_path else _hub_checkpoints_dir() / LPIPS_VGG_FILE
            raise MissingWeightsError(
                f"the perceptual loss needs torchvision's VGG16 weights {LPIPS_VGG_FILE} at {where} "
                f"(torch's hub cache, $TORCH_HOME/hub/checkpoints) and cannot download them here: copy the file "
                f"there (from https://download.pytorch.org/models/{LPIPS_VGG_FILE}), or train without the "
                f"loss with loss.lpips_weight=0") from None

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        # The lpips package takes images in [-1, 1]; LPIPS.forward takes [0, 1] and checks sizes.
        return self.lpips.net(x.float(), y.float()).mean()

    def train(self, mode: bool = True) -> "PerceptualLoss":
        return super().train(False)
