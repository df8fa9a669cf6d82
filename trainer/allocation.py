"""What a training config will allocate, estimated from the config alone, and refused before
anything is allocated when it cannot fit.

The estimate is a lower bound: the model's numbers with their gradients and Adam's two moments
(and the weight EMA), the activations one batch keeps for the backward pass (a SimpleCNN's
convolution outputs at full, half and quarter resolution, the codes, and the decoder's mirror of
them), and the batches the data workers hold ready. Every size that allocates enters it: the
image size, the batch, code dim x codebook, the model width, the workers. A config whose lower
bound exceeds the memory it would run in (the machine's RAM on the CPU, the GPU's memory on
CUDA) is one ``ConfigError`` naming the key most to blame and the estimate: it cannot run, and
would otherwise end in a ``MemoryError`` (or the OOM killer) after minutes of loading.
"""
from __future__ import annotations

import os
import sys

from vqexplore.errors import ConfigError
from vqexplore.modelconfig import parameter_estimate

__all__ = ["memory_estimate", "check_allocation", "machine_memory"]

PREFETCH_FACTOR = 2  # batches each DataLoader worker keeps ready (PyTorch's default)

# Keys that may be blamed, with the value the estimate is compared against (the study's).
_REFERENCE = {"data.size": 64, "train.batch_size": 256, "model.code_dim": 64, "model.codebook_size": 512,
              "model.hidden_dim": 256, "data.num_workers": 0}


def memory_estimate(sizes: dict) -> dict[str, int]:
    """Bytes by part, at least: ``{"model": ..., "activations": ..., "workers": ...}``.

    sizes: the checked ``model`` section's keys plus ``size``, ``batch_size``, ``num_workers`` and
    ``ema_decay`` (flat)."""
    numbers = sum(parameter_estimate(sizes).values())
    copies = 4 + (1 if sizes.get("ema_decay", 0) > 0 else 0)  # weights, gradients, Adam m and v, EMA
    pixels = sizes["size"] ** 2
    h, d, n = sizes["hidden_dim"], sizes["code_dim"], sizes["n_resblocks"]
    c = sizes["in_channels"]
    # Per image, the tensors the backward pass keeps (float32): input and output, the half- and
    # quarter-resolution feature maps of encoder and decoder (each ResBlock two of them), codes.
    per_image = (2 * c * pixels + 2 * (h // 2) * (pixels // 4) + h * (pixels // 16) * (4 + 4 * n)
                 + 3 * d * (pixels // 16))
    batch = sizes["batch_size"]
    return {"model": numbers * 4 * copies, "activations": per_image * batch * 4,
            "workers": sizes["num_workers"] * PREFETCH_FACTOR * batch * c * pixels * 4}


def machine_memory(device: str) -> tuple[int, str]:
    """(bytes, what they are) the training will run in: the GPU's memory when ``device`` is or
    resolves to CUDA, else the machine's RAM."""
    if (device.startswith("cuda") or device == "auto") and _gpu_driver_present():
        try:
            import torch

            if torch.cuda.is_available():
                index = int(device.split(":")[1]) if ":" in device else 0
                if index < torch.cuda.device_count():
                    return torch.cuda.get_device_properties(index).total_memory, "the GPU's memory"
        except Exception:  # no usable CUDA: the run will say so; estimate against the RAM
            pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's memory"
    except (ValueError, OSError, AttributeError):
        return 2 ** 62, "this machine's memory"


def _gpu_driver_present() -> bool:
    """Whether asking torch about CUDA can answer yes: torch already imported, or a GPU driver's
    device files present (NVIDIA, or ROCm's /dev/kfd). Without one the answer is the RAM, found
    without the 1.5 s of ``import torch``, so an impossible config is refused at once."""
    return "torch" in sys.modules or any(os.path.exists(p) for p in _GPU_DRIVER_FILES)


_GPU_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd")


def _gb(n: int) -> str:
    if n < 2 ** 30:
        return f"{n / 2 ** 20:,.0f} MB"
    return f"{n / 2 ** 30:,.1f} GB" if n < 2 ** 40 * 10 else f"{n / 2 ** 40:,.0f} TB"


def _sizes(cfg) -> dict:
    return {**cfg.model.kwargs(), "size": cfg.data.size, "batch_size": cfg.train.batch_size,
            "num_workers": cfg.data.num_workers, "ema_decay": cfg.train.ema_decay}


def _blame(sizes: dict, total: int) -> str:
    """The key whose reference value lowers the estimate most."""
    best, best_drop = "data.size", -1
    for key, reference in _REFERENCE.items():
        name = key.split(".")[1]
        if key in ("model.code_dim", "model.codebook_size") and sizes["quantizer"] not in ("vq", "simvq", "ibq"):
            continue
        if sizes[name] <= reference:
            continue
        drop = total - sum(memory_estimate({**sizes, name: reference}).values())
        if drop > best_drop:
            best, best_drop = key, drop
    return best


def check_allocation(cfg, limit: int | None = None, what: str | None = None) -> None:
    """Raise ``ConfigError`` (key named, estimate given) when the config's lower-bound memory
    estimate exceeds ``limit`` (default: :func:`machine_memory` of ``cfg.train.device``)."""
    if limit is None:
        limit, what = machine_memory(cfg.train.device)
    sizes = _sizes(cfg)
    parts = memory_estimate(sizes)
    total = sum(parts.values())
    if total <= limit:
        return
    key = _blame(sizes, total)
    value = sizes[key.split(".")[1]]
    detail = ", ".join(f"{name} {_gb(n)}" for name, n in parts.items() if n)
    raise ConfigError(f"{value:,} needs at least {_gb(total)} of memory to train ({detail}), more than "
                      f"{what or 'the limit'} of {_gb(limit)}; lower it", key=key)
