"""Published VQGAN tokenizers as vqexplore checkpoints: LlamaGen, taming-transformers, diffusers.

Each importer reads the published weights without running the publisher's code, renames every
tensor onto :class:`vqexplore.VQModel` (``arch="vqgan"``, :mod:`vqexplore.nets.vqgan`), reads the
architecture from the tensors' shapes (width ``ch``, ``ch_mult``, ``num_res_blocks``, which levels
have attention, ``z_channels``, codebook size and dimension) and loads them strictly: a tensor the
model does not have, or one it lacks, is one :class:`ImportError_` listing the names. What shapes
cannot tell comes from flags: the training ``resolution`` (256 for the published models; it places
the attention sides and is what the apps' size modes use), the GroupNorm ``norm_groups`` (32) and,
for LlamaGen, the l2-normalised codebook (``codebook_l2_norm``, True as published).

Where the names come from (read with the project's search tools):

- LlamaGen: FoundationVision/LlamaGen ``tokenizer/tokenizer_image/vq_model.py``: ``encoder.conv_blocks.{i}``
  (``res.{j}``, ``attn.{j}``, ``downsample``), ``mid.{0,1,2}``, ``decoder.conv_blocks.{k}`` from the
  lowest resolution up (``upsample``), ``quantize.embedding.weight``, the usage buffer
  ``quantize.codebook_used`` (dropped: statistics, not weights), ``quant_conv``, ``post_quant_conv``.
  The ``.pt`` holds ``{"model": state_dict, ...}`` (training extras such as the optimizer and the
  discriminator are ignored).
- taming-transformers: CompVis/taming-transformers ``taming/models/vqgan.py`` and
  ``taming/modules/diffusionmodules/model.py``: the names vqexplore's VQGAN uses, plus
  ``quantize.embedding.weight`` (``VectorQuantizer2``), ``quant_conv``, ``post_quant_conv``; the
  Lightning ``.ckpt`` holds ``{"state_dict": ..., "epoch", "global_step", "optimizer_states", ...}``
  and the state dict carries the training loss (``loss.perceptual_loss.*``: LPIPS;
  ``loss.discriminator.*``: the PatchGAN), both dropped.
- diffusers: ``diffusers.VQModel`` (``down_blocks.{i}.resnets`` / ``attentions`` / ``downsamplers.0``,
  ``mid_block``, ``up_blocks.{k}`` from the lowest resolution up, attention projections as linear
  layers ``to_q``/``to_k``/``to_v``/``to_out.0`` (or the older ``query``/``key``/``value``/``proj_attn``),
  ``conv_shortcut``, ``conv_norm_out``), read from its folder's ``config.json`` +
  ``diffusion_pytorch_model.safetensors``.

Quantizer conventions: all three search the nearest code by euclidean distance and decode the code
itself; LlamaGen l2-normalises tokens and codes first (vqexplore's ``l2_norm=True``). taming's and
diffusers' ``VectorQuantizer2`` default to ``legacy=True``, which weights the codebook term by beta
and the commitment term by 1; vqexplore weights the commitment term by ``commitment_weight`` (0.25)
and the codebook term by 1. Codes and reconstructions are unaffected; only fine-tuning losses differ.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError

__all__ = ["KINDS", "ImportError_", "ImportResult", "convert", "import_checkpoint", "read_source"]

KINDS = ("llamagen", "taming", "diffusers")
LICENCES = {  # the source code's licence, which the published weights are distributed under
    "llamagen": ("mit", "MIT (FoundationVision/LlamaGen)"),
    "taming": ("mit", "MIT (CompVis/taming-transformers)"),
    "diffusers": ("other", "the licence on the source model's own card"),
}


class ImportError_(CheckpointError):
    """A published checkpoint that cannot become a vqexplore checkpoint (one sentence)."""


@dataclass
class ImportResult:
    out: Path
    config: dict
    dropped: list[str]   # tensors of the source left out on purpose (loss, usage statistics)


# -- reading ----------------------------------------------------------------------------------

class _Inert:
    """What a Lightning callback class in a checkpoint's ``callbacks`` dict becomes: a name only.
    PyTorch Lightning 1.x keys that dict by the callback's class (``type(callback)``), so a taming
    ``.ckpt`` refers to ``ModelCheckpoint`` even though no weight depends on it."""


# Classes a published checkpoint may name outside its weights, read as _Inert (never imported or run).
_INERT_GLOBALS = [f"{pkg}.callbacks.{mod}.{cls}" for pkg in ("pytorch_lightning", "lightning.pytorch")
                  for mod, cls in (("model_checkpoint", "ModelCheckpoint"), ("early_stopping", "EarlyStopping"),
                                   ("lr_monitor", "LearningRateMonitor"))]


def _torch_load(path: Path) -> object:
    """``torch.load(weights_only=True)``: tensors and plain containers only, nothing executed
    (argparse.Namespace, which LlamaGen's training script stores, is allowed: it only holds values;
    Lightning's callback classes, keys of a taming checkpoint's ``callbacks``, become :class:`_Inert`)."""
    import argparse

    allowed = [argparse.Namespace] + [(_Inert, name) for name in _INERT_GLOBALS]
    try:
        with torch.serialization.safe_globals(allowed):
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:  # files of torch < 1.6 (not zip) cannot be memory-mapped
                if "mmap" not in str(e):
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ImportError_(f"{path} cannot be read as weights only ({first[:200]}); vqexplore never unpickles "
                           f"code, re-save the state dict alone with torch.save(state_dict, path)") from None


def read_source(kind: str, src: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict with the publisher's names, the publisher's config when the source has one)."""
    src = Path(src)
    if kind not in KINDS:
        raise ImportError_(f"unknown source kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not src.exists():
        raise ImportError_(f"{src} does not exist")
    if kind == "diffusers":
        return _read_diffusers(src)
    if src.is_dir():
        raise ImportError_(f"{src} is a folder; give the {kind} checkpoint file "
                           f"({'e.g. vq_ds16_c2i.pt' if kind == 'llamagen' else 'e.g. last.ckpt'})")
    obj = _torch_load(src)
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "ema"):  # LlamaGen's "model" (else "ema"), Lightning's "state_dict"
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ImportError_(f"{src} holds no state dict ('model' for LlamaGen, 'state_dict' for taming)")
    return dict(obj), {}


def _read_diffusers(src: Path) -> tuple[dict[str, torch.Tensor], dict]:
    folder = src / "vqvae" if (src / "vqvae" / "config.json").exists() else src
    cfg_path = folder / "config.json"
    config = {}
    if cfg_path.exists():
        try:
            config = json.loads(cfg_path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ImportError_(f"{cfg_path} is not JSON ({e})") from None
        if config.get("_class_name", "VQModel") != "VQModel":
            raise ImportError_(f"{cfg_path} describes a {config['_class_name']}, not a diffusers VQModel")
    weights = folder / "diffusion_pytorch_model.safetensors"
    if weights.exists():
        from safetensors.torch import load_file
        try:
            return load_file(str(weights)), config
        except Exception as e:
            raise ImportError_(f"{weights} cannot be read ({e})") from None
    if (folder / "diffusion_pytorch_model.bin").exists():
        return read_source("taming", folder / "diffusion_pytorch_model.bin")[0], config
    raise ImportError_(f"{folder} has no diffusion_pytorch_model.safetensors (a diffusers VQModel folder holds "
                       f"config.json and the weights)")


# -- renaming ---------------------------------------------------------------------------------

def _levels(keys, pattern: str) -> int:
    found = [int(m.group(1)) for k in keys if (m := re.match(pattern, k))]
    return max(found) + 1 if found else 0


def _rename_llamagen(state: dict) -> tuple[dict, list[str]]:
    n = _levels(state, r"decoder\.conv_blocks\.(\d+)\.")
    out, dropped = {}, []
    mid = {"0": "block_1", "1": "attn_1", "2": "block_2"}
    for key, value in state.items():
        new = key
        if key == "quantize.codebook_used":
            dropped.append(key)
            continue
        new = re.sub(r"^encoder\.conv_blocks\.(\d+)\.res\.", r"encoder.down.\1.block.", new)
        new = re.sub(r"^encoder\.conv_blocks\.(\d+)\.", r"encoder.down.\1.", new)
        new = re.sub(r"^(encoder|decoder)\.mid\.([012])\.", lambda m: f"{m.group(1)}.mid.{mid[m.group(2)]}.", new)
        m = re.match(r"^decoder\.conv_blocks\.(\d+)\.(res\.|)(.*)$", new)
        if m:
            new = f"decoder.up.{n - 1 - int(m.group(1))}.{'block.' if m.group(2) else ''}{m.group(3)}"
        out[_common(new)] = value
    return out, dropped


def _rename_taming(state: dict) -> tuple[dict, list[str]]:
    out, dropped = {}, []
    for key, value in state.items():
        if key.startswith("loss."):
            dropped.append(key)
            continue
        out[_common(key)] = value
    return out, dropped


_ATTN_PARTS = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
               "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}


def _rename_diffusers(state: dict) -> tuple[dict, list[str]]:
    n = _levels(state, r"decoder\.up_blocks\.(\d+)\.")
    out = {}
    for key, value in state.items():
        new = key
        new = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", new)
        new = re.sub(r"^encoder\.down_blocks\.(\d+)\.attentions\.", r"encoder.down.\1.attn.", new)
        new = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        m = re.match(r"^decoder\.up_blocks\.(\d+)\.(resnets|attentions|upsamplers\.0)\.(.*)$", new)
        if m:
            part = {"resnets": "block", "attentions": "attn", "upsamplers.0": "upsample"}[m.group(2)]
            new = f"decoder.up.{n - 1 - int(m.group(1))}.{part}.{m.group(3)}"
        new = re.sub(r"^(encoder|decoder)\.mid_block\.resnets\.([01])\.",
                     lambda m: f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.", new)
        new = re.sub(r"^(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.mid.attn_1.", new)
        new = new.replace(".conv_norm_out.", ".norm_out.").replace(".conv_shortcut.", ".nin_shortcut.")
        m = re.match(r"^(.*\.(?:attn\.\d+|attn_1))\.(group_norm|to_q|to_k|to_v|to_out\.0|query|key|value|proj_attn)"
                     r"\.(weight|bias)$", new)
        if m:
            new = f"{m.group(1)}.{_ATTN_PARTS[m.group(2)]}.{m.group(3)}"
            if m.group(2) != "group_norm" and m.group(3) == "weight" and value.dim() == 2:
                value = value[:, :, None, None]  # a linear layer over channels is a 1x1 convolution
        out[_common(new)] = value
    return out, []


def _common(key: str) -> str:
    """The names every source shares with the published VQModel's top level."""
    for old, new in (("quantize.embedding.weight", "quantizer.embedding"), ("quant_conv.", "pre_quant."),
                     ("post_quant_conv.", "post_quant.")):
        if key == old or (old.endswith(".") and key.startswith(old)):
            return new + key[len(old):] if old.endswith(".") else new
    return key


# -- architecture from the shapes ------------------------------------------------------------

def _shape(state: dict, key: str, kind: str) -> torch.Size:
    if key not in state:
        raise ImportError_(f"the {kind} checkpoint has no {key!r}-like weight; it is not a {kind} VQGAN "
                           f"(found e.g. {', '.join(sorted(state)[:3])})")
    return state[key].shape


def infer_config(state: dict, kind: str, *, resolution: int = 256, norm_groups: int = 32,
                 l2_norm: bool = False) -> dict:
    """The VQModel config a renamed state dict describes."""
    ch, in_channels = _shape(state, "encoder.conv_in.weight", kind)[:2]
    n = _levels(state, r"encoder\.down\.(\d+)\.")
    blocks = _levels(state, r"encoder\.down\.0\.block\.(\d+)\.")
    if n == 0 or blocks == 0:
        raise ImportError_(f"the {kind} checkpoint has no encoder levels (encoder.down.*); it is not a VQGAN")
    ch_mult = []
    for i in range(n):
        width = _shape(state, f"encoder.down.{i}.block.0.conv1.weight", kind)[0]
        if width % ch:
            raise ImportError_(f"level {i} is {width} wide, not a multiple of the first width {ch}; "
                               f"vqexplore's VQGAN needs widths ch x ch_mult")
        ch_mult.append(width // ch)
    enc_attn = {i for i in range(n) if f"encoder.down.{i}.attn.0.q.weight" in state}
    dec_attn = {i for i in range(n) if f"decoder.up.{i}.attn.0.q.weight" in state}
    if enc_attn != dec_attn:
        raise ImportError_(f"the encoder has attention at levels {sorted(enc_attn)} and the decoder at "
                           f"{sorted(dec_attn)}; vqexplore's VQGAN puts both at the same sides")
    f = 2 ** (n - 1)
    if resolution % f:
        raise ImportError_(f"--resolution {resolution} is not a multiple of this model's downsampling {f}")
    codes, dim = _shape(state, "quantizer.embedding", kind)
    return dict(arch="vqgan", quantizer="vq", codebook_size=int(codes), code_dim=int(dim), l2_norm=l2_norm,
                in_channels=int(in_channels), ch=int(ch), ch_mult=ch_mult, num_res_blocks=blocks,
                attn_resolutions=[resolution // 2 ** i for i in sorted(enc_attn)],
                z_channels=int(_shape(state, "encoder.conv_out.weight", kind)[0]), dropout=0.0,
                norm_groups=norm_groups, resolution=resolution)


def _diffusers_flags(config: dict, flags: dict) -> dict:
    """What a diffusers config.json says that the shapes cannot (and what vqexplore cannot hold)."""
    problems = []
    if config.get("norm_type", "group") != "group":
        problems.append(f"norm_type {config['norm_type']!r} (only 'group')")
    if config.get("act_fn", "silu") != "silu":
        problems.append(f"act_fn {config['act_fn']!r} (only 'silu')")
    if config.get("mid_block_add_attention", True) is not True:
        problems.append("mid_block_add_attention false (the VQGAN's middle has attention)")
    if config.get("lookup_from_codebook"):
        problems.append("lookup_from_codebook true")
    if problems:
        raise ImportError_(f"this diffusers VQModel has {'; '.join(problems)}, which vqexplore's VQGAN does not")
    out = dict(flags)
    if out.get("norm_groups") is None and config.get("norm_num_groups"):
        out["norm_groups"] = int(config["norm_num_groups"])
    if out.get("resolution") is None and isinstance(config.get("sample_size"), int):
        out["resolution"] = int(config["sample_size"])
    return out


# -- converting ------------------------------------------------------------------------------

def convert(kind: str, state: dict, config: dict | None = None, *, resolution: int | None = None,
            norm_groups: int | None = None, l2_norm: bool | None = None):
    """(VQModel with the published weights in eval mode, names dropped on purpose)."""
    from ..models import VQModel

    rename = {"llamagen": _rename_llamagen, "taming": _rename_taming, "diffusers": _rename_diffusers}[kind]
    renamed, dropped = rename(state)
    originals = dict(zip(renamed, [k for k in state if k not in dropped]))  # new name -> publisher's
    flags = {"resolution": resolution, "norm_groups": norm_groups}
    if kind == "diffusers":
        flags = _diffusers_flags(config or {}, flags)
    cfg = infer_config(renamed, kind, resolution=flags["resolution"] or 256, norm_groups=flags["norm_groups"] or 32,
                       l2_norm=(kind == "llamagen") if l2_norm is None else l2_norm)
    try:
        with torch.device("meta"):
            expected = VQModel(**cfg).state_dict()
    except Exception as e:
        raise ImportError_(f"the {kind} weights describe a model vqexplore cannot build ({e})") from None
    missing = sorted(set(expected) - set(renamed))
    unexpected = sorted(originals.get(k, k) for k in set(renamed) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} weight(s) vqexplore's VQGAN needs: {', '.join(missing[:12])}"
                         + (" ..." if len(missing) > 12 else ""))
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected weight(s): {', '.join(unexpected[:12])}"
                         + (" ..." if len(unexpected) > 12 else ""))
        raise ImportError_(f"the {kind} checkpoint does not match the VQGAN its shapes describe: "
                           + "; ".join(parts) + f". Is it a {kind} VQ tokenizer?")
    wrong = [f"{originals.get(k, k)} {tuple(renamed[k].shape)} (needs {tuple(v.shape)})"
             for k, v in expected.items() if tuple(renamed[k].shape) != tuple(v.shape)]
    if wrong:
        raise ImportError_(f"the {kind} checkpoint has weights of the wrong shape: {', '.join(wrong[:8])}")
    model = VQModel(**cfg)
    model.load_state_dict({k: v.float() for k, v in renamed.items()}, strict=True)
    return model.eval(), dropped


def _sha256(path: Path) -> str | None:
    if path.is_dir():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def import_checkpoint(kind: str, src: str | Path, out: str | Path, *, resolution: int | None = None,
                      norm_groups: int | None = None, l2_norm: bool | None = None,
                      command: str | None = None) -> ImportResult:
    """Convert a published checkpoint into the vqexplore checkpoint folder ``out`` (config.json,
    model.safetensors, a model card naming the source and its licence)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ImportError_(f"--out {out} exists and is not an empty folder; choose a new folder")
    state, config = read_source(kind, src)
    model, dropped = convert(kind, state, config, resolution=resolution, norm_groups=norm_groups, l2_norm=l2_norm)
    licence_id, licence = LICENCES[kind]
    digest = _sha256(Path(src))
    source = {"kind": kind, "path": str(src), "sha256": digest, "licence": licence, "dropped": len(dropped)}
    model.save_pretrained(out, model_card_kwargs={"command": command, "name": out.name, "source": source,
                                                  "license": licence_id})
    return ImportResult(out, model.config, dropped)
