"""What a ``VQModel`` config may say, checked without building anything and without torch.

``check_config`` turns keyword arguments (a trainer config's ``model:`` section, a checkpoint's
config.json) into a :class:`ModelConfig`: every argument with its effective value, types checked
against the constructor's annotations, values against their ranges, and the model's size estimated
from the config alone (:func:`parameter_estimate`) and refused before anything is allocated.

This module imports no torch on purpose: ``python -m trainer --cfg ...`` refuses an impossible config
in a fraction of a second, before the 1.5 s of ``import torch``. :class:`vqexplore.models.VQModel`
takes exactly the arguments of :func:`_arguments` (tests/test_models.py compares the signatures).
"""
from __future__ import annotations

import inspect
import math
import typing

from .errors import ConfigError
from .typecheck import check_keywords

QUANTIZERS = ("vq", "fsq", "simvq", "lfq", "bsq", "ibq")
ARCHS = ("simplecnn", "vqgan")
SIMPLECNN_DOWNSAMPLE = 4  # SimpleCNN: two stride-2 convolutions
GAN_LOSSES = ("hinge", "non-saturating")  # the discriminator's losses (vqexplore.gan), loss.gan in a run config


def _arguments(quantizer: str = "vq", codebook_size: int | None = None, code_dim: int | None = None,
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
    """VQModel's constructor arguments, their types and defaults (documented in VQModel's docstring)."""


def config_fields() -> tuple[str, ...]:
    """Names of the VQModel constructor arguments (the keys config.json may hold)."""
    return tuple(inspect.signature(_arguments).parameters)


def check_config(config: dict) -> "ModelConfig":
    """Check keyword arguments of VQModel and return all of them with their effective values
    (defaults filled in; codebook_size 512 and code_dim 64, or implied by FSQ levels, LFQ/BSQ sizes).

    Types come from the annotations of :func:`_arguments`. Raises ConfigError whose ``key`` names the
    bad argument (``"levels[1]"``); callers nesting the config prefix it with ``error.under("model")``.
    """
    params = inspect.signature(_arguments).parameters
    hints = typing.get_type_hints(_arguments)
    cfg = {name: p.default for name, p in params.items()}
    cfg.update(check_keywords(config, {name: hints[name] for name in cfg}, "VQModel"))
    _check_values(cfg)
    return ModelConfig(cfg)


def downsample_factor(cfg: dict) -> int:
    """How many pixels a token covers along each side, from a checked VQModel config."""
    if cfg["arch"] == "vqgan":
        return 2 ** (len(cfg["ch_mult"]) - 1)
    return SIMPLECNN_DOWNSAMPLE


QUANTIZER_ONLY = {  # arguments that only some quantizers take (a true value elsewhere is an error)
    "levels": ("fsq",), "l2_norm": ("vq",), "ema_update": ("vq",), "entropy_reg": ("vq",),
    "kmeans_init": ("vq",), "dead_code_threshold": ("vq",), "rotation_trick": ("vq",),
    "entropy_loss_weight": ("lfq", "bsq"), "diversity_gamma": ("lfq", "bsq"), "entropy_group_bits": ("lfq", "bsq"),
}
ARCH_ONLY = {  # arguments of one architecture (the other's config leaves them out)
    "hidden_dim": "simplecnn", "n_resblocks": "simplecnn",
    "ch": "vqgan", "ch_mult": "vqgan", "num_res_blocks": "vqgan", "attn_resolutions": "vqgan",
    "z_channels": "vqgan", "dropout": "vqgan", "norm_groups": "vqgan",
}
# The VQGAN's defaults: LlamaGen's VQ-16 (tokenizer/tokenizer_image/vq_model.py, ModelArgs and
# Encoder/Decoder defaults), which are also taming's f16 ImageNet ddconfig (configs/imagenet_vqgan.yaml).
VQGAN_DEFAULTS = {"ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "z_channels": 256, "dropout": 0.0,
                  "norm_groups": 32, "resolution": 256}
_SIMPLECNN_DEFAULTS = {"hidden_dim": 256, "n_resblocks": 2}
MAX_LEVELS = 10  # len(ch_mult): downsampling up to 512

# LFQ / BSQ defaults of the keys above (None elsewhere), as MAGVIT-v2 and vector_quantize_pytorch.
_BINARY_DEFAULTS = {"entropy_loss_weight": 0.1, "diversity_gamma": 1.0}


def _check_values(cfg: dict) -> None:
    """Reject impossible values (types are already checked); fill in the effective sizes."""
    quantizer = cfg["quantizer"]
    if quantizer not in QUANTIZERS:
        raise ConfigError(f"must be one of {', '.join(QUANTIZERS)}, got {quantizer!r}", key="quantizer")
    for name, owners in QUANTIZER_ONLY.items():
        if cfg[name] and quantizer not in owners:
            raise ConfigError(f"applies to quantizer={' or '.join(map(repr, owners))} only, not {quantizer!r}",
                              key=name)
    _check_arch(cfg)
    if quantizer == "fsq":
        _check_fsq_levels(cfg)
    if quantizer in ("lfq", "bsq"):
        _check_binary(cfg)
    cfg["codebook_size"] = 512 if cfg["codebook_size"] is None else cfg["codebook_size"]
    cfg["code_dim"] = 64 if cfg["code_dim"] is None else cfg["code_dim"]
    ranges = [  # (key, fine?, what it must be)
        ("codebook_size", cfg["codebook_size"] >= 1, "a positive integer"),
        ("code_dim", cfg["code_dim"] >= 1, "a positive integer"),
        ("hidden_dim", cfg["hidden_dim"] >= 2 and cfg["hidden_dim"] % 2 == 0, "an even integer >= 2"),
        ("resolution", cfg["resolution"] is None or cfg["resolution"] >= 1, "a positive integer"),
        ("n_resblocks", cfg["n_resblocks"] >= 0, "an integer >= 0"),
        ("in_channels", cfg["in_channels"] >= 1, "a positive integer"),
        ("ema_decay", 0.0 < cfg["ema_decay"] < 1.0, "in (0, 1)"),
        ("entropy_reg", cfg["entropy_reg"] >= 0, ">= 0"),
        ("entropy_temperature", cfg["entropy_temperature"] > 0, "> 0"),
        ("commitment_weight", cfg["commitment_weight"] >= 0, ">= 0"),
        ("dead_code_threshold", cfg["dead_code_threshold"] >= 0, ">= 0 (0 turns restarts off)"),
        ("entropy_loss_weight", (cfg["entropy_loss_weight"] or 0) >= 0, ">= 0 (0 turns the entropy loss off)"),
        ("diversity_gamma", (cfg["diversity_gamma"] or 0) >= 0, ">= 0"),
    ]
    for key, fine, what in ranges:
        if not fine:
            raise ConfigError(f"must be {what}, got {cfg[key]!r}", key=key)
    for key, value in cfg.items():  # NaN passes no comparison above but would poison training
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"must be a finite number, got {value!r}", key=key)
    _check_size(cfg)


def _check_arch(cfg: dict) -> None:
    """The architecture's own keys: the other architecture's left at their defaults, this one's
    filled in and checked (widths, levels, attention sides, GroupNorm groups)."""
    arch = cfg["arch"]
    if arch not in ARCHS:
        raise ConfigError(f"must be one of {', '.join(ARCHS)}, got {arch!r}", key="arch")
    for name, owner in ARCH_ONLY.items():
        unset = cfg[name] is None or (owner == "simplecnn" and cfg[name] == _SIMPLECNN_DEFAULTS[name])
        if owner != arch and not unset:
            raise ConfigError(f"applies to arch={owner!r} only, not {arch!r}", key=name)
    if arch != "vqgan":
        return
    for name, default in VQGAN_DEFAULTS.items():
        cfg[name] = default if cfg[name] is None else cfg[name]
    if not cfg["ch_mult"] or len(cfg["ch_mult"]) > MAX_LEVELS:
        raise ConfigError(f"must list 1 to {MAX_LEVELS} width multipliers (one per level), got {cfg['ch_mult']}",
                          key="ch_mult")
    for i, m in enumerate(cfg["ch_mult"]):
        if m < 1:
            raise ConfigError(f"every multiplier must be >= 1, got {m}", key=f"ch_mult[{i}]")
    f = 2 ** (len(cfg["ch_mult"]) - 1)
    checks = [("ch", cfg["ch"] >= 1, "a positive integer"),
              ("num_res_blocks", 0 <= cfg["num_res_blocks"] <= MAX_RESBLOCKS, f"an integer in [0, {MAX_RESBLOCKS}]"),
              ("z_channels", cfg["z_channels"] >= 1, "a positive integer"),
              ("dropout", 0.0 <= cfg["dropout"] < 1.0, "in [0, 1)"),
              ("norm_groups", cfg["norm_groups"] >= 1, "a positive integer"),
              ("resolution", cfg["resolution"] >= f and cfg["resolution"] % f == 0,
               f"a multiple of the downsampling {f} (2^(len(ch_mult) - 1))")]
    for key, fine, what in checks:
        if not fine:
            raise ConfigError(f"must be {what}, got {cfg[key]!r}", key=key)
    if cfg["attn_resolutions"] is None:  # LlamaGen: attention at the lowest level (the token grid)
        cfg["attn_resolutions"] = [cfg["resolution"] // f]
    sides = [cfg["resolution"] // 2 ** i for i in range(len(cfg["ch_mult"]))]
    for i, side in enumerate(cfg["attn_resolutions"]):
        if side not in sides:
            raise ConfigError(f"{side} is not a feature-map side of this VQGAN (resolution {cfg['resolution']} "
                              f"gives {', '.join(map(str, sides))})", key=f"attn_resolutions[{i}]")
    for width in sorted({cfg["ch"]} | {cfg["ch"] * m for m in cfg["ch_mult"]}):
        if width % cfg["norm_groups"]:
            raise ConfigError(f"GroupNorm groups must divide every width (ch x ch_mult), but {width} is not a "
                              f"multiple of {cfg['norm_groups']}", key="norm_groups")


# Sizes no SimpleCNN tokenizer of this project comes near, refused before anything is allocated
# (a config.json or a trainer config could otherwise ask for terabytes or a million layers).
MAX_PARAMETERS = 2 ** 31     # numbers held by the model (weights and buffers): 8 GiB in float32
MAX_CODEBOOK_SIZE = 2 ** 31
MAX_RESBLOCKS = 256


def parameter_estimate(cfg: dict) -> dict[str, int]:
    """Numbers (weights + buffers) a checked config's model holds, by part, computed from the
    config alone (nothing is built): ``{"network": ..., "codebook": ...}``. The network part is
    exact; the codebook part is an upper bound (tests/test_models.py holds both to the real count)."""
    c, k, d = cfg["in_channels"], cfg["codebook_size"], cfg["code_dim"]
    if cfg["arch"] == "vqgan":
        width = cfg["z_channels"]
        network = vqgan_parameters(c, cfg["ch"], cfg["ch_mult"], cfg["num_res_blocks"], cfg["attn_resolutions"],
                                   cfg["z_channels"], cfg["resolution"])
    else:
        width = cfg["hidden_dim"]
        network = simplecnn_parameters(c, cfg["hidden_dim"], cfg["n_resblocks"])
    network += (width * d + d) + (d * width + width)  # pre_quant, post_quant
    codebook = 0
    if cfg["quantizer"] in ("vq", "simvq", "ibq"):  # an explicit (K, D) codebook
        copies = 2 if cfg["ema_update"] else 1       # EMA k-means keeps a running (K, D) sum
        codebook = k * d * copies + 2 * k + 2 + (d * d if cfg["quantizer"] == "simvq" else 0)
    return {"network": network, "codebook": codebook}


def _check_size(cfg: dict) -> None:
    """Refuse configs whose model could not be held, naming the key to lower."""
    if cfg["codebook_size"] > MAX_CODEBOOK_SIZE:
        raise ConfigError(f"must be at most 2^31 = {MAX_CODEBOOK_SIZE:,}, got {cfg['codebook_size']:,}",
                          key="codebook_size")
    if cfg["n_resblocks"] > MAX_RESBLOCKS:
        raise ConfigError(f"must be at most {MAX_RESBLOCKS}, got {cfg['n_resblocks']:,}", key="n_resblocks")
    parts = parameter_estimate(cfg)
    total = sum(parts.values())
    if total > MAX_PARAMETERS:
        if parts["codebook"] >= parts["network"]:
            key = "codebook_size" if cfg["codebook_size"] >= cfg["code_dim"] else "code_dim"
        else:
            width = "ch" if cfg["arch"] == "vqgan" else "hidden_dim"
            key = width if cfg[width] >= cfg["in_channels"] else "in_channels"
        raise ConfigError(f"{cfg[key]:,} makes a model of about {total:,} numbers ({total * 4 / 2 ** 30:,.0f} GiB "
                          f"in float32), over the limit of 2^31; lower it", key=key)


def _check_fsq_levels(cfg: dict) -> None:
    """FSQ: levels given, each >= 2, and the codebook size and code dim they imply."""
    levels = cfg["levels"]
    if not levels:
        raise ConfigError("required for quantizer='fsq', e.g. levels=[8, 5, 5, 5]", key="levels")
    for i, level in enumerate(levels):
        if level < 2:
            raise ConfigError(f"every FSQ level must be >= 2, got {level} in {levels}", key=f"levels[{i}]")
    if math.prod(levels) > 2 ** 31:
        raise ConfigError(f"the FSQ codebook prod({levels}) is too large", key="levels")
    implied = {"codebook_size": math.prod(levels), "code_dim": len(levels)}
    for name, value in implied.items():
        if cfg[name] is not None and cfg[name] != value:
            raise ConfigError(f"{cfg[name]} contradicts levels={levels} (which imply {value}); drop {name}", key=name)
        cfg[name] = value


def _check_binary(cfg: dict) -> None:
    """LFQ / BSQ: K a power of two, D = log2(K) (implied when omitted); their loss defaults."""
    quantizer, k = cfg["quantizer"], cfg["codebook_size"]
    k = 512 if k is None else k
    if k < 2 or k & (k - 1):
        hint = f" (e.g. {1 << max(1, (k - 1).bit_length())})" if k >= 2 else ""
        raise ConfigError(f"must be a power of two >= 2 for quantizer={quantizer!r}, got {k}{hint}",
                          key="codebook_size")
    d = k.bit_length() - 1
    if cfg["code_dim"] is not None and cfg["code_dim"] != d:
        raise ConfigError(f"{cfg['code_dim']} contradicts codebook_size={k} (quantizer={quantizer!r} needs "
                          f"code_dim = log2(codebook_size) = {d}); drop code_dim", key="code_dim")
    cfg["codebook_size"], cfg["code_dim"] = k, d
    g = cfg["entropy_group_bits"]
    if g is not None and not 1 <= g <= d:
        raise ConfigError(f"must be null (the exact entropy) or a number of bits per group in [1, {d}] (the code's "
                          f"{d} bits), got {g}", key="entropy_group_bits")
    for name, default in _BINARY_DEFAULTS.items():
        cfg[name] = default if cfg[name] is None else cfg[name]


class ModelConfig(dict):
    """A validated model config (:meth:`VQModel.check_config`): every VQModel argument with its
    effective value, readable as attributes (``cfg.codebook_size``). The one type a trainer
    config's ``model:`` section and a checkpoint's config.json become."""

    def __getattr__(self, key: str):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def kwargs(self) -> dict:
        """VQModel constructor arguments."""
        return dict(self)


def simplecnn_parameters(in_channels: int, hidden_dim: int, n_resblocks: int) -> int:
    """Weights of the encoder + decoder (without the 1x1 convolutions to and from the codes)."""
    c, h, n, half = in_channels, hidden_dim, n_resblocks, hidden_dim // 2
    convs = (c * half * 16 + half) + (half * h * 16 + h) + 2 * (h * h * 9 + h) + (h * half * 16 + half) \
        + (half * c * 16 + c)
    return convs + 2 * n * 10 * h * h  # a ResBlock: 3x3 + 1x1 convolutions without bias


def vqgan_parameters(in_channels: int, ch: int, ch_mult: list[int], num_res_blocks: int,
                     attn_resolutions: list[int], z_channels: int, resolution: int) -> int:
    """Weights of the encoder + decoder (without the 1x1 convolutions to and from the codes),
    computed from the config alone, layer by layer as :mod:`vqexplore.nets.vqgan` builds them
    (nothing is built; tests/test_vqgan.py holds it to the real count)."""
    def conv(a, b, k):
        return a * b * k * k + b

    def norm(c):
        return 2 * c

    def res(a, b):
        return norm(a) + conv(a, b, 3) + norm(b) + conv(b, b, 3) + (conv(a, b, 1) if a != b else 0)

    def attn(c):
        return norm(c) + 4 * conv(c, c, 1)

    top = ch * ch_mult[-1]
    middle = 2 * res(top, top) + attn(top)
    total = conv(in_channels, ch, 3)  # encoder
    width, side = ch, resolution
    for level, mult in enumerate(ch_mult):
        for _ in range(num_res_blocks):
            total += res(width, ch * mult) + (attn(ch * mult) if side in attn_resolutions else 0)
            width = ch * mult
        if level != len(ch_mult) - 1:
            total += conv(width, width, 3)
            side //= 2
    total += middle + norm(top) + conv(top, z_channels, 3)
    total += conv(z_channels, top, 3) + middle  # decoder
    width = top
    for level in reversed(range(len(ch_mult))):
        for _ in range(num_res_blocks + 1):
            total += res(width, ch * ch_mult[level]) + (attn(ch * ch_mult[level]) if side in attn_resolutions else 0)
            width = ch * ch_mult[level]
        if level != 0:
            total += conv(width, width, 3)
            side *= 2
    return total + norm(width) + conv(width, in_channels, 3)
