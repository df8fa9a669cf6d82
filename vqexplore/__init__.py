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
from .lazy import lazy_names

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


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
