"""Training configuration: YAML -> dataclasses, validated before any work starts.

A config file has these sections (every key optional except where noted; defaults are the
reference study's hyper-parameters)::

    name: vq-512                 # the run folder is <out_dir>/<name>
    out_dir: runs
    model:                       # VQModel's keyword arguments, passed through; VQModel's docstring
      quantizer: vq              # describes every key (levels, l2_norm, ema_update, entropy_reg,
      codebook_size: 512         # commitment_weight, hidden_dim, ...)
      code_dim: 64
    data:
      train: builtin             # builtin | photos | image folder | Downsampled ImageNet files | hf:<name>
      val: builtin
      size: 64                   # images are size x size (multiple of 4)
      num_workers: 0
      in_memory: null            # null = automatic
      device_crops: null         # photos only: cut training crops on the GPU (null = when on CUDA)
    train:
      batch_size: 256            # global batch (split evenly across DDP processes)
      lr: 4.0e-4                 # Adam, peak learning rate
      betas: [0.9, 0.999]        # Adam's betas
      lr_schedule: constant      # constant | cosine (from lr down to min_lr at the last step)
      warmup_steps: 0            # linear warm-up from 0 to lr over these first steps
      min_lr: 0.0                # the cosine schedule's final learning rate
      grad_clip: 0.0             # clip the global gradient norm to this (0 = off)
      ema_decay: 0.0             # keep an EMA of the weights (e.g. 0.999), saved as step-N/ema (0 = off)
      init_from: null            # start from a trained tokenizer's weights (checkpoint/run folder or Hub id;
                                 # its model must equal model:), e.g. to fine-tune it with the VQGAN stage
      steps: 500000
      seed: 0
      precision: fp32            # fp32 | bf16 (autocast; on CUDA also TF32 for float32 matmuls)
      compile: false             # torch.compile the model
      channels_last: false
      device: auto               # auto | cpu | cuda | cuda:N | mps
      threads: 0                 # CPU threads per process (0 = PyTorch's default)
      deterministic: false       # GPU: deterministic kernels, bit-exact reruns (CPU always is)
      log_every: 100             # metrics.jsonl / TensorBoard / progress bar
      val_every: 5000            # 0 = only at the end
      val_images: 1024           # the fixed validation subset used during training
      grid_images: 8             # reconstruction grid (PNG + TensorBoard)
      ckpt_every: 10000          # 0 = only at the end
      keep_last: 3
    loss:                        # the VQGAN stage (the defaults: MSE only, the study's loss)
      recon: mse                 # mse | l1 reconstruction loss
      recon_weight: 1.0
      lpips_weight: 0.0          # perceptual loss (LPIPS, VGG16 trunk); > 0 needs vgg16-397923af.pth
      lpips_weights: null        # local copy of vgg16-397923af.pth (else torch's hub cache)
      lpips_random: false        # a random VGG trunk (tests and benchmarks only: a meaningless loss)
      adv_weight: 0.0            # adversarial loss weight; > 0 adds a PatchGAN discriminator
      disc_start: 0              # the step at which the adversarial loss and discriminator training start
      disc_loss: hinge           # hinge | non-saturating
      adaptive_weight: false     # taming's adaptive weight (gradient-norm ratio at the decoder's last layer)
      disc_lr: 1.0e-4            # the discriminator's own Adam
      disc_betas: [0.5, 0.9]
      disc_width: 64             # PatchGAN: channels of the first layer ...
      disc_layers: 3             # ... and number of stride-2 layers
    eval:
      lpips_weights: null        # local AlexNet weights file for LPIPS (else torch's hub cache)
      rfid_weights: null         # local InceptionV3 weights file for rFID
      batch_size: 64

``key=value`` overrides on the command line (``train.steps=200 model.levels=[8,5,5,5]``) go
through the same validation. Every problem is a :class:`ConfigError` naming the key. The trainer
owns ``data:``, ``train:``, ``loss:`` and ``eval:``; ``model:`` belongs to ``VQModel``, so a new VQModel
argument is a valid key here, type-checked from its annotation, without being declared again.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vqexplore.data import NAMED_SOURCES
from vqexplore.errors import ConfigError
from vqexplore.modelconfig import ModelConfig, check_config  # the model: section (torch-free)
from vqexplore.typecheck import check_keywords, convert, unknown_key
from vqexplore.utils import flatten

from . import strict_yaml
from .allocation import check_allocation


@dataclass
class DataConfig:
    train: str = "builtin"
    val: str = "builtin"
    size: int = 64
    num_workers: int = 0
    in_memory: bool | None = None
    device_crops: bool | None = None


@dataclass
class TrainConfig:
    batch_size: int = 256
    lr: float = 4e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    min_lr: float = 0.0
    grad_clip: float = 0.0
    ema_decay: float = 0.0
    init_from: str | None = None
    steps: int = 500_000
    seed: int = 0
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    device: str = "auto"
    threads: int = 0
    deterministic: bool = False
    log_every: int = 100
    val_every: int = 5000
    val_images: int = 1024
    grid_images: int = 8
    ckpt_every: int = 10_000
    keep_last: int = 3


@dataclass
class LossConfig:
    recon: str = "mse"
    recon_weight: float = 1.0
    lpips_weight: float = 0.0
    lpips_weights: str | None = None
    lpips_random: bool = False
    adv_weight: float = 0.0
    disc_start: int = 0
    disc_loss: str = "hinge"
    adaptive_weight: bool = False
    disc_lr: float = 1e-4
    disc_betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    disc_width: int = 64
    disc_layers: int = 3

    @property
    def gan(self) -> bool:
        """Whether the run trains a discriminator (adversarial weight > 0)."""
        return self.adv_weight > 0

    @property
    def plain(self) -> bool:
        """The study's loss (MSE + quantizer losses): the lean train_step, no VQGAN stage."""
        return self.recon == "mse" and self.recon_weight == 1.0 and not self.lpips_weight and not self.gan


@dataclass
class EvalConfig:
    lpips_weights: str | None = None
    rfid_weights: str | None = None
    batch_size: int = 64


@dataclass
class Config:
    name: str = "run"
    out_dir: str = "runs"
    model: ModelConfig = field(default_factory=lambda: _check_model({}))
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_dict(self) -> dict:
        return {"name": self.name, "out_dir": self.out_dir, "model": self.model.kwargs(),
                **{key: asdict(getattr(self, key)) for key in ("data", "train", "loss", "eval")}}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "loss": LossConfig,
             "eval": EvalConfig}  # in file order
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


# ---------------------------------------------------------------------------------------------
# Sections: keys and types
# ---------------------------------------------------------------------------------------------

def _check_model(raw: Any) -> ModelConfig:
    """``model:`` is VQModel's: it checks keys, types and values; the key gets the ``model.`` prefix."""
    try:
        return check_config({} if raw is None else raw)
    except ConfigError as e:
        raise e.under("model") from None


def _build_section(name: str, cls, raw: Any):
    if name == "model":
        return _check_model(raw)
    hints = {f.name: typing.get_type_hints(cls)[f.name] for f in dataclasses.fields(cls)}
    try:
        return cls(**check_keywords({} if raw is None else raw, hints, name))
    except ConfigError as e:
        raise e.under(name) from None


def from_dict(raw: Any) -> Config:
    """Build a Config from a plain dict (parsed YAML); types checked, values not yet."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"the config must be a mapping with sections {', '.join(_SECTIONS)}, "
                          f"got {type(raw).__name__}")
    top = {"name", "out_dir", *_SECTIONS}
    model, data = raw.get("model"), raw.get("data")
    size = data.get("size", DataConfig.size) if isinstance(data, dict) else DataConfig.size
    if (model is None or isinstance(model, dict)) and "resolution" not in (model or {}) \
            and isinstance(size, int) and not isinstance(size, bool):
        # The tokenizer records the image size it trains at (config.json "resolution"): the apps'
        # size modes follow it. A VQGAN's attention sides count from it too.
        raw = {**raw, "model": {**(model or {}), "resolution": size}}
    kwargs = {}
    for key, value in raw.items():
        if key not in top:
            raise unknown_key(key, top, "the config")
        if key in _SECTIONS and key != "model":
            kwargs[key] = _build_section(key, _SECTIONS[key], value)
        elif key != "model":
            kwargs[key] = convert(key, value, str)
    if "model" in raw:  # last: a relative restart threshold needs the batch and the token grid
        data, train = kwargs.get("data") or DataConfig(), kwargs.get("train") or TrainConfig()
        kwargs["model"] = _check_model(_resolve_relative(raw["model"], data, train))
    return Config(**kwargs)


# ---------------------------------------------------------------------------------------------
# Relative values, worked out from the rest of the config
# ---------------------------------------------------------------------------------------------

RELATIVE_KEY = "uniform_share"


def tokens_per_step(data: DataConfig, train: TrainConfig, model: dict | None = None) -> int:
    """Encoder outputs one optimiser step quantizes: batch x the token grid of a crop (the grid of
    ``model``'s architecture: SimpleCNN 1/4 of the side, a VQGAN 1/2^(len(ch_mult) - 1))."""
    from vqexplore.modelconfig import SIMPLECNN_DOWNSAMPLE, VQGAN_DEFAULTS

    f = SIMPLECNN_DOWNSAMPLE
    if (model or {}).get("arch") == "vqgan":
        ch_mult = model.get("ch_mult") or VQGAN_DEFAULTS["ch_mult"]
        f = 2 ** (len(ch_mult) - 1) if isinstance(ch_mult, list) else SIMPLECNN_DOWNSAMPLE  # a bad list: refused later
    return int(train.batch_size) * max(1, int(data.size) // f) ** 2


def _resolve_relative(model: Any, data: DataConfig, train: TrainConfig) -> Any:
    """``model.dead_code_threshold: {uniform_share: f}``: a restart threshold given as a fraction of
    the uniform share (tokens per step / codebook size), worked out here from this config's own
    batch and token grid, so ``train.batch_size=`` or ``data.size=`` overrides keep it right."""
    if not isinstance(model, dict) or not isinstance(model.get("dead_code_threshold"), dict):
        return model
    spec = model["dead_code_threshold"]
    key = "model.dead_code_threshold"
    share = spec.get(RELATIVE_KEY)
    if set(spec) != {RELATIVE_KEY} or isinstance(share, bool) or not isinstance(share, (int, float)) \
            or not share > 0 or share != share or share == float("inf"):
        raise ConfigError(f"{key}: a number of tokens per step, or {{{RELATIVE_KEY}: f}} with f > 0 "
                          f"(a fraction of tokens per step / codebook size), got {spec!r}")
    if model.get("quantizer", "vq") != "vq":
        raise ConfigError(f"{key}: applies to quantizer='vq' only")
    codes = model.get("codebook_size", 512)
    if isinstance(codes, bool) or not isinstance(codes, int) or codes < 1:
        raise ConfigError(f"model.codebook_size: must be a whole number >= 1 to work out {key}, got {codes!r}")
    return {**model, "dead_code_threshold": float(share) * tokens_per_step(data, train, model) / codes}


# ---------------------------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------------------------

def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """``["train.steps=200", "model.levels=[8,5,5]"]`` applied to the parsed YAML dict.

    Values are parsed as YAML (``true``, ``1e-3``, ``[8, 5]``, ``null``) by ``strict_yaml``: a
    quoted value (``train.lr='0.1'``) is a string and is refused where a number is expected."""
    raw = dict(raw or {})
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. train.steps=200")
        key, text = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not key or any(not p for p in parts) or len(parts) > 2:
            raise ConfigError(f"override {item!r}: the key must be a top-level key or section.key, e.g. train.lr=1e-3")
        try:
            value = strict_yaml.load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        if len(parts) == 1:
            if parts[0] in _SECTIONS:
                raise ConfigError(f"override {item!r}: {parts[0]} is a section; set one of its keys, e.g. "
                                  f"{parts[0]}.<key>=...")
            raw[parts[0]] = value
        else:
            section, sub = parts
            if section not in _SECTIONS:
                top = [*_SECTIONS, "name", "out_dir"]
                match = difflib.get_close_matches(section, top, n=1)
                hint = f" (did you mean {match[0]}?)" if match else ""
                raise ConfigError(f"{key}: unknown section {section!r}{hint}; sections are {', '.join(_SECTIONS)}")
            current = raw.get(section)
            current = dict(current) if isinstance(current, dict) else {}
            current[sub] = value
            raw[section] = current
    return raw


# ---------------------------------------------------------------------------------------------
# Value checks
# ---------------------------------------------------------------------------------------------

def _check_data_source(key: str, source: str) -> None:
    source = source.strip()
    if not source:
        raise ConfigError(f"{key}: empty; use 'builtin', 'photos', an image folder, the Downsampled ImageNet files or "
                          "hf:<dataset>")
    if source.lower() in NAMED_SOURCES:
        return
    if source.startswith("hf:"):
        if len(source) <= 3:
            raise ConfigError(f"{key}: {source!r} names no dataset; write hf:<repo id or saved folder>")
        return
    if not Path(source).expanduser().exists():
        raise ConfigError(f"{key}: {source} does not exist; set {key} to your data folder "
                          f"(e.g. {key}=/data/imagenet/{'train' if key.endswith('train') else 'val'}) "
                          f"or use 'builtin' or 'photos'")


def validate(cfg: Config) -> Config:
    """Check every value; raise ConfigError('<key>: <problem>') for the first bad one."""
    if not _NAME_RE.match(cfg.name) or cfg.name in (".", ".."):
        raise ConfigError(f"name: {cfg.name!r} must be a folder name (letters, digits, . _ + -)")
    if not cfg.out_dir.strip():
        raise ConfigError("out_dir: must not be empty")
    if cfg.model.in_channels != 3:
        raise ConfigError(f"model.in_channels: must be 3 (the data is RGB), got {cfg.model.in_channels}")

    d = cfg.data
    _check_data_source("data.train", d.train)
    _check_data_source("data.val", d.val)
    from vqexplore.modelconfig import downsample_factor
    f = downsample_factor(cfg.model)
    if d.size < max(8, f) or d.size % f:
        raise ConfigError(f"data.size: must be a multiple of {f} (the model's downsampling) and >= {max(8, f)}, "
                          f"got {d.size}")
    if d.num_workers < 0:
        raise ConfigError(f"data.num_workers: must be >= 0, got {d.num_workers}")

    t = cfg.train
    positive = ("batch_size", "steps", "log_every", "val_images", "keep_last")
    for key in positive:
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key}: must be >= 1, got {getattr(t, key)}")
    for key in ("val_every", "ckpt_every", "grid_images", "threads"):
        if getattr(t, key) < 0:
            raise ConfigError(f"train.{key}: must be >= 0 (0 turns it off), got {getattr(t, key)}")
    if not (math.isfinite(t.lr) and t.lr > 0):
        raise ConfigError(f"train.lr: must be a positive number, got {t.lr}")
    if t.lr_schedule not in ("constant", "cosine"):
        raise ConfigError(f"train.lr_schedule: must be constant or cosine, got {t.lr_schedule!r}")
    if t.warmup_steps < 0:
        raise ConfigError(f"train.warmup_steps: must be >= 0 (0 turns warm-up off), got {t.warmup_steps}")
    _check_betas("train.betas", t.betas)
    if not (math.isfinite(t.min_lr) and 0 <= t.min_lr <= t.lr):
        raise ConfigError(f"train.min_lr: must lie in [0, train.lr={t.lr:g}], got {t.min_lr}")
    if not (math.isfinite(t.grad_clip) and t.grad_clip >= 0):
        raise ConfigError(f"train.grad_clip: must be >= 0 (0 turns clipping off), got {t.grad_clip}")
    if not 0 <= t.ema_decay < 1:
        raise ConfigError(f"train.ema_decay: must lie in [0, 1) (0 turns the weight EMA off), got {t.ema_decay}")
    if t.precision not in ("fp32", "bf16"):
        raise ConfigError(f"train.precision: must be fp32 or bf16, got {t.precision!r}")
    if not 0 <= t.seed < 2 ** 64:  # torch.manual_seed takes 64 bits
        raise ConfigError(f"train.seed: must lie in [0, 2^64), got {t.seed}")
    if not re.match(r"^(auto|cpu|mps|cuda(:\d+)?)$", t.device):
        raise ConfigError(f"train.device: must be auto, cpu, cuda, cuda:N or mps, got {t.device!r}")

    if t.init_from is not None and not t.init_from.strip():
        raise ConfigError("train.init_from: empty; name a checkpoint folder, a run folder or a Hub repo id, or null")
    _check_loss(cfg.loss)

    e = cfg.eval
    for key in ("lpips_weights", "rfid_weights"):
        path = getattr(e, key)
        if path is not None and not Path(path).expanduser().is_file():
            raise ConfigError(f"eval.{key}: {path} does not exist; point it at the weights file or set it to null")
    if e.batch_size < 1:
        raise ConfigError(f"eval.batch_size: must be >= 1, got {e.batch_size}")
    check_allocation(cfg)  # every size that allocates, against the memory the run would have
    return cfg


def _check_betas(key: str, betas: list[float]) -> None:
    if len(betas) != 2 or not all(math.isfinite(b) and 0 <= b < 1 for b in betas):
        raise ConfigError(f"{key}: must be two numbers in [0, 1) (Adam's beta1, beta2), got {betas}")


def _check_loss(loss: LossConfig) -> None:
    from vqexplore.modelconfig import GAN_LOSSES

    if loss.recon not in ("mse", "l1"):
        raise ConfigError(f"loss.recon: must be mse or l1, got {loss.recon!r}")
    for key in ("recon_weight", "lpips_weight", "adv_weight"):
        value = getattr(loss, key)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"loss.{key}: must be a number >= 0 (0 turns it off), got {value}")
    if loss.disc_start < 0:
        raise ConfigError(f"loss.disc_start: must be >= 0, got {loss.disc_start}")
    if loss.disc_loss not in GAN_LOSSES:
        raise ConfigError(f"loss.disc_loss: must be {' or '.join(GAN_LOSSES)}, got {loss.disc_loss!r}")
    if not (math.isfinite(loss.disc_lr) and loss.disc_lr > 0):
        raise ConfigError(f"loss.disc_lr: must be a positive number, got {loss.disc_lr}")
    _check_betas("loss.disc_betas", loss.disc_betas)
    if not 1 <= loss.disc_width <= 1024:
        raise ConfigError(f"loss.disc_width: must lie in [1, 1024], got {loss.disc_width}")
    if not 1 <= loss.disc_layers <= 6:
        raise ConfigError(f"loss.disc_layers: must lie in [1, 6], got {loss.disc_layers}")
    if loss.lpips_weights is not None and not Path(loss.lpips_weights).expanduser().is_file():
        raise ConfigError(f"loss.lpips_weights: {loss.lpips_weights} does not exist; point it at a copy of "
                          f"torchvision's VGG16 weights file vgg16-397923af.pth or set it to null")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from the defaults when ``path`` is None), apply ``key=value``
    overrides and validate. The run name defaults to the file's stem."""
    raw: dict = {}
    if path is not None:
        raw = read_yaml(path)
        raw.setdefault("name", Path(path).stem)
    raw = apply_overrides(raw, overrides or [])
    return validate(from_dict(raw))


BASE_KEY = "base"


def read_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """A config file parsed into a dict (the one YAML reader of configs and of a run's
    config.yaml); one clear ConfigError when it is missing, not text, not YAML or not a mapping.

    ``base: other.yaml`` (a path relative to this file) layers the file on another: the base is
    read first (it may have a base of its own), then this file's top-level keys replace the base's
    and its section keys (``model:``, ``data:``, ...) replace the base's keys one by one. A file
    that is its own base, directly or through others, is refused."""
    path = Path(path)
    if not path.is_file():
        if _chain:
            raise ConfigError(f"{_chain[-1]}: base: {path} does not exist; give a path relative to {_chain[-1].parent}")
        raise ConfigError(f"--cfg {path} does not exist; pass a YAML file such as configs/cpu/default.yaml")
    try:
        raw = strict_yaml.load(path.read_text(encoding="utf-8")) or {}
    except strict_yaml.DuplicateKeyError as e:
        raise ConfigError(f"{path}: {e}; keep one of them") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--cfg {path} is not a text file (not UTF-8); pass a YAML config such as "
                          f"configs/cpu/default.yaml") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}; fix the syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping with sections {', '.join(_SECTIONS)}")
    if BASE_KEY not in raw:
        return raw
    base = raw.pop(BASE_KEY)
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: base: must be the path of a YAML file relative to {path.parent}, got {base!r}")
    base_path = (path.parent / base).resolve()
    chain = (*_chain, path.resolve())
    if base_path in chain:
        cycle = " -> ".join(p.name for p in (*chain[chain.index(base_path):], base_path))
        raise ConfigError(f"{path}: base: files form a cycle ({cycle}); remove one of those base: lines")
    merged = read_yaml(base_path, chain)
    for key, value in raw.items():
        if key in _SECTIONS and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def effective_dict(path: str | Path, overrides: list[str] | None = None) -> dict:
    """What a config file amounts to (``Config.to_dict()``): read as ``load_config`` reads it, keys
    and types checked, values not checked against this machine."""
    raw = read_yaml(path)
    raw.setdefault("name", Path(path).stem)
    return from_dict(apply_overrides(raw, overrides or [])).to_dict()


def read_run_config(path: str | Path) -> Config:
    """A run's recorded config.yaml as a :class:`Config`: keys and types checked, values as the
    run had them (not checked again: its data folder, say, may be gone since)."""
    return from_dict(read_yaml(path))


# Keys that may differ when a run is resumed (everything else must match the saved config).
RESUMABLE_CHANGES = {
    "train.steps", "train.log_every", "train.val_every", "train.val_images", "train.grid_images",
    "train.ckpt_every", "train.keep_last", "train.device", "train.threads", "train.deterministic", "train.compile",
    "train.channels_last",
    "data.num_workers", "data.in_memory", "data.device_crops", "eval.lpips_weights", "eval.rfid_weights",
    "eval.batch_size", "loss.lpips_weights",
    "out_dir",
}


def resume_conflicts(saved: Config, new: Config) -> list[str]:
    """Keys whose change would make a resumed run differ from the one it continues."""
    a, b = flatten(saved.to_dict()), flatten(new.to_dict())
    return [k for k in sorted(set(a) | set(b)) if k not in RESUMABLE_CHANGES and a.get(k) != b.get(k)]
