"""SimpleCNN, the reference study's autoencoder: (B, 3, H, W) -> (B, hidden, H/4, W/4) and back."""
from __future__ import annotations

from torch import Tensor, nn

from ..modelconfig import SIMPLECNN_DOWNSAMPLE, simplecnn_parameters

DOWNSAMPLE = SIMPLECNN_DOWNSAMPLE  # two stride-2 convolutions


class ResBlock(nn.Module):
    """x + [ReLU, Conv3x3 (no bias), ReLU, Conv1x1 (no bias)](x)."""

    def __init__(self, dim: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(), nn.Conv2d(dim, dim, 3, padding=1, bias=False),
            nn.ReLU(), nn.Conv2d(dim, dim, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class Encoder(nn.Module):
    """(B, 3, H, W) -> (B, hidden, H/4, W/4)."""

    def __init__(self, hidden_dim: int = 256, n_resblocks: int = 2, in_channels: int = 3):
        super().__init__()
        half = hidden_dim // 2
        self.out_channels = hidden_dim
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, half, 4, stride=2, padding=1), nn.LeakyReLU(),
            nn.Conv2d(half, hidden_dim, 4, stride=2, padding=1), nn.LeakyReLU(),
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1),
            *[ResBlock(hidden_dim) for _ in range(n_resblocks)])

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(B, hidden, h, w) -> (B, 3, 4h, 4w) in [-1, 1]."""

    def __init__(self, hidden_dim: int = 256, n_resblocks: int = 2, out_channels: int = 3):
        super().__init__()
        half = hidden_dim // 2
        self.in_channels = hidden_dim
        self.net = nn.Sequential(
            *[ResBlock(hidden_dim) for _ in range(n_resblocks)], nn.LeakyReLU(),
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1), nn.LeakyReLU(),
            nn.ConvTranspose2d(hidden_dim, half, 4, stride=2, padding=1), nn.LeakyReLU(),
            nn.ConvTranspose2d(half, out_channels, 4, stride=2, padding=1), nn.Tanh())

    @property
    def last_layer(self) -> Tensor:
        """The weight of the last layer (taming's adaptive GAN weight uses its gradients)."""
        return self.net[-2].weight

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


parameter_count = simplecnn_parameters  # computed in the torch-free modelconfig
