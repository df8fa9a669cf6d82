"""vqexplore: train vector-quantized image tokenizers under one setup and look inside them.

    import vqexplore
    model = vqexplore.load("checkpoints/vq-512")      # folder, run folder or Hub repo id
    ids = model.encode(images)                         # (B, 3, H, W) in [-1, 1] -> (B, H/f, W/f), f = model.downsample
    recon = model.decode_indices(ids)

The names below are imported on first use (PEP 562): ``import vqexplore`` and the torch-free modules
(``vqexplore.modelconfig``, ``errors``, ``runlayout``) cost no ``import torch``, so the trainer refuses a bad
config in a fraction of a second.
"""
from .errors import (CheckpointError, ConfigError, DataError, HubError, ImageError,
                     MissingWeightsError, VQExploreError)

__version__ = "0.1.0"

_LAZY = {
    "VQModel": "models", "VQModelOutput": "models", "load": "models",
    "resolve": "hub", "list_checkpoints": "hub",
    "VectorQuantizer": "quantizers", "FSQ": "quantizers", "SimVQ": "quantizers", "QuantizerOutput": "quantizers",
}

__all__ = [
    "VQModel", "VQModelOutput", "load", "resolve", "list_checkpoints",
    "VectorQuantizer", "FSQ", "SimVQ", "QuantizerOutput",
    "VQExploreError", "ConfigError", "CheckpointError", "HubError", "ImageError", "DataError",
    "MissingWeightsError",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
