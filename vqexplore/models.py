"""``VQModel``, the one model class: an autoencoder (the study's SimpleCNN or the VQGAN of
taming-transformers / LlamaGen, :mod:`vqexplore.nets`) around one of six quantizers.

Images are (B, 3, H, W) in [-1, 1] with H, W multiples of ``f = model.downsample`` (4 for
SimpleCNN, 2^(len(ch_mult) - 1) for the VQGAN: 16 for the published f16 models); the code grid is
(H/f, W/f).
"""
from __future__ import annotations

import contextvars
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from . import modelconfig
from .errors import CheckpointError, ConfigError, VQExploreError
from .hub import CONFIG_NAME, WEIGHTS_NAME, check_safetensors, model_card, read_config, resolve
# The config's checks live in the torch-free modelconfig; these names keep their old home here.
from .modelconfig import (ARCH_ONLY, MAX_CODEBOOK_SIZE, MAX_PARAMETERS, MAX_RESBLOCKS,  # noqa: F401
                          QUANTIZER_ONLY, QUANTIZERS, VQGAN_DEFAULTS, ModelConfig, config_fields,
                          downsample_factor, parameter_estimate)
from .nets import build as build_nets
from .nets import simplecnn
from .nets.simplecnn import Decoder, Encoder, ResBlock  # noqa: F401  (their old home)
from .quantizers import BSQ, FSQ, IBQ, LFQ, SimVQ, VectorQuantizer

DOWNSAMPLE = simplecnn.DOWNSAMPLE  # SimpleCNN's; a model's own is ``model.downsample``


@dataclass
class VQModelOutput:
    """reconstruction: (B, 3, H, W) (SimpleCNN: in [-1, 1]; VQGAN: unsquashed, as published);
    indices: (B, H/f, W/f) int64; losses: named quantizer losses (scalars); quantized: (B, D, H/f, W/f)."""

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
    """SimpleCNN or VQGAN autoencoder with a VQ, FSQ, SimVQ, LFQ, BSQ or IBQ bottleneck.

    The constructor is flat and JSON-able (it is ``config.json``, and the ``model:`` section of a
    trainer config)::

        VQModel(quantizer="vq", codebook_size=512, code_dim=64)         # the study's model
        VQModel(quantizer="vq", codebook_size=2048, code_dim=64, l2_norm=True)
        VQModel(quantizer="fsq", levels=[8, 8, 8])                      # K = 512, D = 3
        VQModel(quantizer="simvq", codebook_size=2048, code_dim=64)
        VQModel(quantizer="lfq", codebook_size=16384)                   # D = log2(K) = 14
        VQModel(quantizer="bsq", codebook_size=16384)
        VQModel(quantizer="ibq", codebook_size=16384, code_dim=64)
        VQModel(arch="vqgan", codebook_size=16384, code_dim=8, l2_norm=True)   # LlamaGen VQ-16
        VQModel(arch="vqgan", codebook_size=1024, code_dim=256)                 # taming f16, 1,024 codes

    Arguments (each is checked against its annotation and range by :meth:`check_config`; a bad
    one raises :class:`~vqexplore.errors.ConfigError` whose ``key`` names it):

    - ``quantizer``: ``vq`` | ``fsq`` | ``simvq`` | ``lfq`` | ``bsq`` | ``ibq``.
    - ``codebook_size`` (K, default 512) and ``code_dim`` (D, default 64); FSQ: implied by ``levels``;
      LFQ, BSQ: K a power of two and D = log2(K) (implied when omitted).
    - ``levels``: FSQ only, values per channel, each >= 2 (e.g. ``[8, 5, 5, 5]``: K = 1000, D = 4).
    - ``l2_norm``: VQ only, search and decode l2-normalised codes.
    - ``ema_update`` / ``ema_decay``: VQ only, EMA k-means codebook updates with this decay in (0, 1).
    - ``entropy_reg`` / ``entropy_temperature``: VQ only, weight (>= 0) and softmax temperature
      (> 0) of the entropy regulariser; ``entropy_temperature`` is also LFQ's and BSQ's
      (their ``inv_temperature`` 100 is temperature 0.01).
    - ``entropy_loss_weight`` / ``diversity_gamma``: LFQ and BSQ only (default 0.1 and 1.0, as
      MAGVIT-v2 and vector_quantize_pytorch): the entropy loss is
      ``entropy_loss_weight * (mean_n H(p_n) - diversity_gamma * H(mean_n p_n))``.
    - ``entropy_group_bits``: LFQ and BSQ only, the form of that entropy loss. ``None`` (default):
      exact, vector_quantize_pytorch's, a softmax over all K codes per token (O(N K)). An integer g
      in [1, log2 K]: factorised (the BSQ paper's), O(N log2(K) 2^g / g): ``H(p_n)`` as the sum of
      per-bit binary entropies (exact, without vector_quantize_pytorch's 1e-5 clamp), and
      ``H(mean_n p_n)`` as the sum of the entropies of consecutive groups of g bits, an upper bound
      of the joint entropy (it ignores dependence between groups; exact at g = log2 K). See
      :mod:`vqexplore.quantizers.lfq` and the README ("LFQ and BSQ: the exact or the factorised
      entropy").
    - ``commitment_weight``: weight (>= 0) of the commitment loss (every quantizer but FSQ).
    - ``kmeans_init``: VQ only, k-means on the first batch's encoder outputs.
    - ``dead_code_threshold``: VQ only, restart codes whose EMA count per step falls below it (0: off).
    - ``rotation_trick``: VQ only, rotation-trick gradients instead of straight-through.
    - ``arch``: ``simplecnn`` (default, the study's model) | ``vqgan`` (:mod:`vqexplore.nets.vqgan`).
    - ``hidden_dim`` (even, >= 2), ``n_resblocks`` (>= 0): SimpleCNN only; ``in_channels``: both.
    - VQGAN only (defaults: LlamaGen VQ-16 = taming f16): ``ch`` (128), ``ch_mult`` ([1, 1, 2, 2, 4];
      downsampling f = 2^(len - 1)), ``num_res_blocks`` (2), ``attn_resolutions`` (feature-map sides
      with attention after every block; default [resolution / f], the lowest level, as LlamaGen),
      ``z_channels`` (256), ``dropout`` (0.0), ``norm_groups`` (GroupNorm groups, 32; divides every
      width ``ch * m``).
    - ``resolution``: the image side the tokenizer was trained at (its native size; the apps' size
      modes follow it). VQGAN: also where ``attn_resolutions`` count from (default 256). SimpleCNN:
      optional (null: not recorded).

    ``save_pretrained(dir)`` writes config.json, model.safetensors and a model card;
    ``VQModel.from_pretrained(dir_or_repo_id)`` loads them strictly (see ``vqexplore.hub``).
    """

    def __init__(self, quantizer: str = "vq", codebook_size: int | None = None, code_dim: int | None = None,
                 levels: list[int] | None = None, l2_norm: bool = False, ema_update: bool = False,
                 ema_decay: float = 0.99, entropy_reg: float = 0.0, entropy_temperature: float = 0.01,
                 commitment_weight: float = 0.25, kmeans_init: bool = False,
                 dead_code_threshold: float = 0.0, rotation_trick: bool = False,
                 entropy_loss_weight: float | None = None, diversity_gamma: float | None = None,
                 entropy_group_bits: int | None = None,
                 hidden_dim: int = 256, n_resblocks: int = 2, in_channels: int = 3, arch: str = "simplecnn",
                 ch: int | None = None, ch_mult: list[int] | None = None, num_res_blocks: int | None = None,
                 attn_resolutions: list[int] | None = None, z_channels: int | None = None,
                 dropout: float | None = None, norm_groups: int | None = None, resolution: int | None = None):
        # Every argument as passed (first statement: nothing else is in this scope yet).
        passed = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        checked = _CHECKED.get()  # from_config(): the config was validated once, by its reader
        cfg = checked if checked is not None and checked == passed else self.check_config(passed)
        self._config = cfg  # what config.json records: effective sizes, not None defaults
        self.quantizer_type = cfg["quantizer"]
        self.quantizer = _build_quantizer(cfg)
        self.arch = cfg["arch"]
        dim = self.quantizer.code_dim
        self.encoder, self.decoder = build_nets(cfg)
        self.pre_quant = nn.Conv2d(self.encoder.out_channels, dim, 1)
        self.post_quant = nn.Conv2d(dim, self.decoder.in_channels, 1)

    @classmethod
    def check_config(cls, config: dict) -> ModelConfig:
        """Check keyword arguments of VQModel and return all of them with their effective values
        (defaults filled in; codebook_size 512 and code_dim 64, or implied by FSQ levels): see
        :func:`vqexplore.modelconfig.check_config`, which this is. Raises ConfigError whose ``key``
        names the bad argument (``"levels[1]"``)."""
        return modelconfig.check_config(config)

    @classmethod
    def from_config(cls, config: "ModelConfig") -> "VQModel":
        """A model from a config :meth:`check_config` has already validated (a trainer config's
        ``model:`` section, a checkpoint's config.json as read by :meth:`_load_source`): it is not
        checked a second time."""
        if not isinstance(config, ModelConfig):
            config = cls.check_config(config)
        token = _CHECKED.set(config)
        try:
            return cls(**config)
        finally:
            _CHECKED.reset(token)

    # -- uniform codebook access -------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def code_dim(self) -> int:
        return self.quantizer.code_dim

    @property
    def downsample(self) -> int:
        """Pixels per token along each side: images of H x W give (H/f, W/f) code grids."""
        return downsample_factor(self._config)

    @property
    def downsample_factor(self) -> int:
        """The same as :attr:`downsample` (its older name)."""
        return self.downsample

    @property
    def resolution(self) -> int | None:
        """The image side the tokenizer was trained at (None: not recorded)."""
        return self._config["resolution"]

    @property
    def config(self) -> dict:
        """Every constructor argument that applies to this architecture, with its effective value
        (what config.json holds; the other architecture's keys are left out)."""
        return {k: v for k, v in self._config.items() if ARCH_ONLY.get(k, self.arch) == self.arch}

    def codebook_vectors(self) -> Tensor:
        """(K, D) codes as the decoder receives them, for every quantizer."""
        return self.quantizer.codebook_vectors()

    # -- encode / decode ------------------------------------------------------------------
    def encode_latents(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, D, H/f, W/f) encoder outputs before quantization."""
        return self.pre_quant(self.encoder(x))

    def encode(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, H/f, W/f) int64 code ids."""
        return self.quantizer(self.encode_latents(x)).indices

    def decode(self, quantized: Tensor) -> Tensor:
        """(B, D, h, w) codes -> (B, 3, f h, f w) images (SimpleCNN: in [-1, 1])."""
        return self.decoder(self.post_quant(quantized))

    def decode_indices(self, indices: Tensor) -> Tensor:
        """(B, h, w) int64 code ids -> (B, 3, f h, f w) images."""
        if indices.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"indices must be an integer tensor, got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(f"indices must lie in [0, {self.codebook_size}), got "
                             f"[{int(indices.min())}, {int(indices.max())}]")
        return self.decode(self.quantizer.lookup(indices.long()).to(self.post_quant.weight.dtype))

    def forward(self, x: Tensor) -> VQModelOutput:
        """(B, 3, H, W) in [-1, 1] -> reconstruction, indices, quantizer losses."""
        f = self.downsample
        if x.dim() != 4 or x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"expected images (B, C, H, W) with H, W multiples of {f}, got {tuple(x.shape)}")
        out = self.quantizer(self.encode_latents(x))
        return VQModelOutput(self.decode(out.quantized), out.indices, out.losses, out.quantized)

    # -- Hub format ---------------------------------------------------------------------
    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None = None, token: str | bool | None = None,
                         map_location: str | torch.device = "cpu", strict: bool = True,
                         **kwargs) -> "VQModel":
        """huggingface_hub's loading hook, behind ``VQModel.from_pretrained(folder_or_repo_id)``:
        every file is checked first, the weights are loaded strictly (every tensor present, none
        extra, same shapes) and without pickle. A missing, truncated or mismatched file raises
        :class:`~vqexplore.errors.CheckpointError` naming it. The model comes back in eval mode
        on ``map_location``.

        ``kwargs``: the mixin's download options (cache_dir, force_download, local_files_only:
        downloads go through :func:`vqexplore.hub.resolve` instead) and config values, which
        override config.json's. ``strict=False`` is not offered: a partial load is an error.
        """
        overrides = {k: v for k, v in kwargs.items() if k in config_fields()}
        return cls._load_source(resolve(model_id, revision=revision, token=token), map_location, overrides)

    @classmethod
    def _load_source(cls, src, map_location: str | torch.device = "cpu", overrides: dict | None = None) -> "VQModel":
        """Load a resolved checkpoint folder: config.json parsed and validated once, the weights
        file's header checked against it before anything is allocated, then a strict load."""
        from safetensors.torch import load_file

        cfg_path, weights_path = src.path / CONFIG_NAME, src.path / WEIGHTS_NAME
        cfg = read_config(cfg_path)
        unknown = sorted(set(cfg) - set(config_fields()))
        if unknown:
            raise CheckpointError(f"{cfg_path} has unknown field(s) {', '.join(unknown)}; "
                                  f"VQModel accepts {', '.join(config_fields())}")
        cfg.update(overrides or {})
        header = check_safetensors(weights_path)
        try:
            cfg = cls.check_config(cfg)
        except (ConfigError, TypeError, ValueError) as e:
            raise CheckpointError(f"{cfg_path} describes an invalid model: {e}") from None
        # Compare with the weights file before a byte is allocated: config.json alone could ask
        # for any size, the weights file's header says what is really there.
        _check_header(cfg, header, cfg_path, weights_path)
        try:
            model = cls.from_config(cfg)
            state = load_file(str(weights_path), device=str(map_location))
        except (MemoryError, RuntimeError) as e:
            if isinstance(e, RuntimeError) and "memory" not in str(e).lower():
                raise CheckpointError(f"{weights_path} cannot be read ({e}); re-save or re-download it") from None
            raise CheckpointError(f"not enough memory to load {weights_path} "
                                  f"({weights_path.stat().st_size / 2 ** 20:,.1f} MiB); free memory or use a "
                                  f"larger machine") from None
        except Exception as e:  # safetensors raises its own error type
            raise CheckpointError(f"{weights_path} cannot be read ({e}); re-save or re-download it") from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            lines = str(e).splitlines()
            detail = " ".join(line.strip() for line in lines[1:3]) or lines[0]
            raise CheckpointError(f"{weights_path} does not match {cfg_path}: {detail}") from None
        model.to(map_location).eval()
        model.source = src
        return model

    def _save_pretrained(self, save_directory: Path) -> None:
        # config.json from the checked config (effective sizes); the mixin then leaves it alone.
        (Path(save_directory) / CONFIG_NAME).write_text(json.dumps(self.config, sort_keys=True, indent=2))
        super()._save_pretrained(save_directory)
        # safetensors writes through a private temp file (mode 0600); give the weights the same
        # permissions as the other files, so a container user or a web server can read them.
        weights = Path(save_directory) / WEIGHTS_NAME
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(weights, 0o666 & ~umask)

    def generate_model_card(self, *args, **kwargs):
        return model_card(self.config, metrics=kwargs.get("metrics"), dataset=kwargs.get("dataset"),
                          command=kwargs.get("command"), repo_id=kwargs.get("repo_id"), name=kwargs.get("name"),
                          source=kwargs.get("source"), license=kwargs.get("license") or "mit")

    def extra_repr(self) -> str:
        return (f"arch={self.arch!r}, quantizer={self.quantizer_type!r}, codebook_size={self.codebook_size}, "
                f"code_dim={self.code_dim}, downsample={self.downsample}")


def _build_quantizer(cfg: dict) -> nn.Module:
    """The quantizer a checked config describes."""
    if cfg["quantizer"] == "fsq":
        return FSQ(cfg["levels"])
    if cfg["quantizer"] == "simvq":
        return SimVQ(cfg["codebook_size"], cfg["code_dim"], commitment_weight=cfg["commitment_weight"])
    if cfg["quantizer"] in ("lfq", "bsq"):
        return (LFQ if cfg["quantizer"] == "lfq" else BSQ)(
            cfg["codebook_size"], entropy_loss_weight=cfg["entropy_loss_weight"],
            diversity_gamma=cfg["diversity_gamma"], commitment_weight=cfg["commitment_weight"],
            entropy_temperature=cfg["entropy_temperature"], entropy_group_bits=cfg["entropy_group_bits"])
    if cfg["quantizer"] == "ibq":
        return IBQ(cfg["codebook_size"], cfg["code_dim"], commitment_weight=cfg["commitment_weight"])
    return VectorQuantizer(
        cfg["codebook_size"], cfg["code_dim"], l2_norm=cfg["l2_norm"], ema_update=cfg["ema_update"],
        ema_decay=cfg["ema_decay"], entropy_reg=cfg["entropy_reg"], entropy_temperature=cfg["entropy_temperature"],
        commitment_weight=cfg["commitment_weight"], kmeans_init=cfg["kmeans_init"],
        dead_code_threshold=cfg["dead_code_threshold"], rotation_trick=cfg["rotation_trick"])


_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


def _check_header(cfg: dict, header: dict, cfg_path: Path, weights_path: Path) -> None:
    """The tensors a checked config's model holds (built on the meta device: shapes, no memory)
    against a safetensors header: same names, same shapes, numeric kinds that convert."""
    with torch.device("meta"):
        expected = VQModel.from_config(cfg).state_dict()
    stored = {k: v for k, v in header.items() if k != "__metadata__"}
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if missing or extra:
        what = (f"lacks {', '.join(missing[:3])}" if missing else "") + (" and " if missing and extra else "") \
            + (f"has unexpected {', '.join(extra[:3])}" if extra else "")
        raise CheckpointError(f"{weights_path} does not match {cfg_path}: the weights file {what}; "
                              f"the two files come from different models, re-save or re-download the checkpoint")
    for name, tensor in expected.items():
        shape, dtype = tuple(stored[name].get("shape", ())), stored[name].get("dtype")
        if shape != tuple(tensor.shape):
            raise CheckpointError(f"{weights_path} does not match {cfg_path}: {name} is {shape} in the weights, "
                                  f"{tuple(tensor.shape)} by the config; the two files come from different "
                                  f"models, re-save or re-download the checkpoint")
        if tensor.is_floating_point() != (dtype in _FLOAT_DTYPES):
            raise CheckpointError(f"{weights_path}: {name} is stored as {dtype}, the model needs "
                                  f"{str(tensor.dtype).removeprefix('torch.')}; re-save or re-download the checkpoint")


_CHECKED: contextvars.ContextVar = contextvars.ContextVar("vqexplore_checked_config", default=None)


def load(source: str | Path, *, device: str | torch.device = "cpu", revision: str | None = None,
         token: str | bool | None = None, local_roots=None) -> VQModel:
    """The one entry point: ``vqexplore.load("checkpoints/vq-512")``, ``load("runs/x")`` (its
    newest checkpoint), ``load("user/repo")``. Returns a VQModel in eval mode on ``device``;
    ``model.source`` (a :class:`vqexplore.hub.Source`) tells where it came from.
    ``local_roots``: see :func:`vqexplore.hub.resolve` (a hosted app passes its folders, or
    ``()`` for Hub repo ids only).

    The source is resolved first (a Hub repo is downloaded once, with a fast failure when the
    Hub is unreachable) and config.json checked, so every problem is one CheckpointError."""
    try:
        src = resolve(source, revision=revision, token=token, local_roots=local_roots)
        model = VQModel._load_source(src, device)  # config.json read and validated once, there
    except CheckpointError:
        raise
    except VQExploreError as e:
        raise CheckpointError(str(e)) from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError, MemoryError, RuntimeError) as e:
        # Anything else wrong in a folder is still the checkpoint's problem, said in one line.
        detail = (str(e).strip().splitlines() or [""])[0][:120]
        raise CheckpointError(f"{source} cannot be loaded ({type(e).__name__}{': ' + detail if detail else ''}); "
                              f"re-save or re-download the checkpoint") from None
    model.source = src
    return model
