"""SimpleCNN autoencoder of the reference study and ``VQModel``, the one model class.

Images are (B, 3, H, W) in [-1, 1] with H, W multiples of 4; the code grid is (H/4, W/4).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from .errors import ConfigError
from .quantizers import FSQ, QuantizerOutput, SimVQ, VectorQuantizer

QUANTIZERS = ("vq", "fsq", "simvq")
DOWNSAMPLE = 4


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
        self.net = nn.Sequential(
            *[ResBlock(hidden_dim) for _ in range(n_resblocks)], nn.LeakyReLU(),
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1), nn.LeakyReLU(),
            nn.ConvTranspose2d(hidden_dim, half, 4, stride=2, padding=1), nn.LeakyReLU(),
            nn.ConvTranspose2d(half, out_channels, 4, stride=2, padding=1), nn.Tanh())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@dataclass
class VQModelOutput:
    """reconstruction: (B, 3, H, W) in [-1, 1]; indices: (B, H/4, W/4) int64;
    losses: named quantizer losses (scalars); quantized: (B, D, H/4, W/4)."""

    reconstruction: Tensor
    indices: Tensor
    losses: dict[str, Tensor]
    quantized: Tensor


class VQModel(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="vqexplore",
    tags=["vqexplore", "image-tokenizer", "vector-quantization"],
    pipeline_tag="image-to-image",
    license="mit",
):
    """SimpleCNN autoencoder with a VQ, FSQ or SimVQ bottleneck.

    The constructor is flat and JSON-able (it is ``config.json``)::

        VQModel(quantizer="vq", codebook_size=512, code_dim=64)         # the study's model
        VQModel(quantizer="vq", codebook_size=2048, code_dim=64, l2_norm=True)
        VQModel(quantizer="fsq", levels=[8, 8, 8])                      # K = 512, D = 3
        VQModel(quantizer="simvq", codebook_size=2048, code_dim=64)

    ``save_pretrained(dir)`` writes config.json, model.safetensors and a model card;
    ``VQModel.from_pretrained(dir_or_repo_id)`` loads them strictly (see ``vqexplore.hub``).
    """

    def __init__(self, quantizer: str = "vq", codebook_size: int | None = None, code_dim: int | None = None,
                 levels: list[int] | None = None, l2_norm: bool = False, ema_update: bool = False,
                 ema_decay: float = 0.99, entropy_reg: float = 0.0, entropy_temperature: float = 0.01,
                 commitment_weight: float = 0.25, kmeans_init: bool = False,
                 dead_code_threshold: float = 0.0, rotation_trick: bool = False, hidden_dim: int = 256,
                 n_resblocks: int = 2, in_channels: int = 3):
        super().__init__()
        if quantizer == "fsq" and isinstance(levels, (list, tuple)) and levels and \
                all(isinstance(v, int) and v >= 2 for v in levels):
            # FSQ's codebook is implied by its levels; explicit values must agree with them.
            implied = {"codebook_size": math.prod(levels), "code_dim": len(levels)}
            for name, given in (("codebook_size", codebook_size), ("code_dim", code_dim)):
                if given is not None and given != implied[name]:
                    raise ConfigError(f"{name}={given} contradicts levels={list(levels)} (which imply {implied[name]}); drop {name}")
            codebook_size, code_dim = implied["codebook_size"], implied["code_dim"]
        codebook_size = 512 if codebook_size is None else codebook_size
        code_dim = 64 if code_dim is None else code_dim
        _validate(quantizer, codebook_size, code_dim, levels, hidden_dim, n_resblocks, ema_decay,
                  entropy_reg, entropy_temperature, l2_norm, ema_update)
        vq_only = {"kmeans_init": kmeans_init, "dead_code_threshold": dead_code_threshold,
                   "rotation_trick": rotation_trick}
        for name, value in vq_only.items():
            if value and quantizer != "vq":
                raise ConfigError(f"{name} applies to quantizer='vq' only, not {quantizer!r}")
        if not isinstance(dead_code_threshold, (int, float)) or isinstance(dead_code_threshold, bool) \
                or not dead_code_threshold >= 0:
            raise ConfigError(f"dead_code_threshold must be a number >= 0 (0 turns restarts off), got {dead_code_threshold!r}")
        self.quantizer_type = quantizer
        if quantizer == "fsq":
            self.quantizer = FSQ(levels)
        elif quantizer == "simvq":
            self.quantizer = SimVQ(codebook_size, code_dim, commitment_weight=commitment_weight)
        else:
            self.quantizer = VectorQuantizer(
                codebook_size, code_dim, l2_norm=l2_norm, ema_update=ema_update, ema_decay=ema_decay,
                entropy_reg=entropy_reg, entropy_temperature=entropy_temperature,
                commitment_weight=commitment_weight, kmeans_init=kmeans_init,
                dead_code_threshold=dead_code_threshold, rotation_trick=rotation_trick)
        dim = self.quantizer.code_dim
        self.encoder = Encoder(hidden_dim, n_resblocks, in_channels)
        self.pre_quant = nn.Conv2d(hidden_dim, dim, 1)
        self.post_quant = nn.Conv2d(dim, hidden_dim, 1)
        self.decoder = Decoder(hidden_dim, n_resblocks, in_channels)
        # config.json records the effective sizes (FSQ: implied by levels), not None defaults.
        config = getattr(self, "_hub_mixin_config", None)
        if isinstance(config, dict):
            config.update(codebook_size=self.codebook_size, code_dim=self.code_dim)

    # -- uniform codebook access -------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def code_dim(self) -> int:
        return self.quantizer.code_dim

    @property
    def downsample_factor(self) -> int:
        return DOWNSAMPLE

    @property
    def config(self) -> dict:
        """The constructor arguments (what config.json holds)."""
        return dict(self._hub_mixin_config)

    def codebook_vectors(self) -> Tensor:
        """(K, D) codes as the decoder receives them, for every quantizer."""
        return self.quantizer.codebook_vectors()

    # -- encode / decode ------------------------------------------------------------------
    def encode_latents(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, D, H/4, W/4) encoder outputs before quantization."""
        return self.pre_quant(self.encoder(x))

    def quantize(self, z: Tensor) -> QuantizerOutput:
        return self.quantizer(z)

    def encode(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, H/4, W/4) int64 code ids."""
        return self.quantizer(self.encode_latents(x)).indices

    def decode(self, quantized: Tensor) -> Tensor:
        """(B, D, h, w) codes -> (B, 3, 4h, 4w) images in [-1, 1]."""
        return self.decoder(self.post_quant(quantized))

    def decode_indices(self, indices: Tensor) -> Tensor:
        """(B, h, w) int64 code ids -> (B, 3, 4h, 4w) images in [-1, 1]."""
        if indices.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"indices must be an integer tensor, got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(f"indices must lie in [0, {self.codebook_size}), got "
                             f"[{int(indices.min())}, {int(indices.max())}]")
        return self.decode(self.quantizer.lookup(indices.long()).to(self.post_quant.weight.dtype))

    def forward(self, x: Tensor) -> VQModelOutput:
        """(B, 3, H, W) in [-1, 1] -> reconstruction, indices, quantizer losses."""
        if x.dim() != 4 or x.shape[-1] % DOWNSAMPLE or x.shape[-2] % DOWNSAMPLE:
            raise ValueError(f"expected images (B, C, H, W) with H, W multiples of {DOWNSAMPLE}, "
                             f"got {tuple(x.shape)}")
        out = self.quantizer(self.encode_latents(x))
        return VQModelOutput(self.decode(out.quantized), out.indices, out.losses, out.quantized)

    # -- Hub format ---------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *, revision: str | None = None,
                        map_location: str | torch.device = "cpu", token: str | bool | None = None,
                        **_ignored) -> "VQModel":
        """Load a checkpoint folder or a Hub repo id, strictly, without pickle.

        Every file is checked first; a missing, truncated or mismatched file raises
        :class:`vqexplore.errors.CheckpointError` naming it.
        """
        from .hub import load_checkpoint

        return load_checkpoint(pretrained_model_name_or_path, revision=revision,
                               map_location=map_location, token=token)

    def _save_pretrained(self, save_directory: Path) -> None:
        super()._save_pretrained(save_directory)
        # safetensors writes through a private temp file (mode 0600); give the weights the same
        # permissions as the other files, so a container user or a web server can read them.
        weights = Path(save_directory) / "model.safetensors"
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(weights, 0o666 & ~umask)

    def generate_model_card(self, *args, **kwargs):
        from .hub import model_card

        return model_card(self.config, metrics=kwargs.get("metrics"), dataset=kwargs.get("dataset"),
                          command=kwargs.get("command"), repo_id=kwargs.get("repo_id"), name=kwargs.get("name"))

    def extra_repr(self) -> str:
        return f"quantizer={self.quantizer_type!r}, codebook_size={self.codebook_size}, code_dim={self.code_dim}"


def _validate(quantizer, codebook_size, code_dim, levels, hidden_dim, n_resblocks, ema_decay,
              entropy_reg, entropy_temperature, l2_norm, ema_update) -> None:
    """Reject impossible configurations with one sentence naming the field."""
    if quantizer not in QUANTIZERS:
        raise ConfigError(f"quantizer must be one of {', '.join(QUANTIZERS)}, got {quantizer!r}")
    if quantizer == "fsq":
        if levels is None:
            raise ConfigError("levels is required for quantizer='fsq', e.g. levels=[8, 5, 5, 5]")
        if not isinstance(levels, (list, tuple)) or not levels or \
                not all(isinstance(v, int) and not isinstance(v, bool) for v in levels):
            raise ConfigError(f"levels must be a non-empty list of integers for FSQ, got {levels!r}")
        if min(levels) < 2:
            raise ConfigError(f"levels: every FSQ level must be >= 2, got {list(levels)}")
        if math.prod(levels) > 2 ** 31:
            raise ConfigError(f"levels: the FSQ codebook prod({list(levels)}) is too large")
    else:
        if levels is not None:
            raise ConfigError(f"levels applies to quantizer='fsq' only, not {quantizer!r}")
        for name, value in (("codebook_size", codebook_size), ("code_dim", code_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if quantizer != "vq" and (l2_norm or ema_update or entropy_reg):
        raise ConfigError(f"l2_norm, ema_update and entropy_reg apply to quantizer='vq' only, not {quantizer!r}")
    if not isinstance(hidden_dim, int) or hidden_dim < 2 or hidden_dim % 2:
        raise ConfigError(f"hidden_dim must be an even integer >= 2, got {hidden_dim!r}")
    if not isinstance(n_resblocks, int) or n_resblocks < 0:
        raise ConfigError(f"n_resblocks must be an integer >= 0, got {n_resblocks!r}")
    if not 0.0 < ema_decay < 1.0:
        raise ConfigError(f"ema_decay must lie in (0, 1), got {ema_decay!r}")
    if entropy_reg < 0:
        raise ConfigError(f"entropy_reg must be >= 0, got {entropy_reg!r}")
    if entropy_temperature <= 0:
        raise ConfigError(f"entropy_temperature must be > 0, got {entropy_temperature!r}")


def config_fields() -> tuple[str, ...]:
    """Names of the VQModel constructor arguments (the keys config.json may hold)."""
    import inspect

    return tuple(p for p in inspect.signature(VQModel.__init__).parameters if p != "self")


def read_config(path: str | Path) -> dict:
    """Parse and check a config.json; unknown fields are an error naming the file."""
    from .errors import CheckpointError

    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: a checkpoint folder needs config.json and model.safetensors") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the checkpoint is corrupt, re-save or re-download it") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} must hold a JSON object of VQModel arguments")
    unknown = sorted(set(cfg) - set(config_fields()))
    if unknown:
        raise CheckpointError(f"{path} has unknown field(s) {', '.join(unknown)}; "
                              f"VQModel accepts {', '.join(config_fields())}")
    return cfg
