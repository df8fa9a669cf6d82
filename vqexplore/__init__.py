"""vqexplore: train vector-quantized image tokenizers under one setup and look inside them.

    import vqexplore
    model = vqexplore.load("checkpoints/vq-512")      # folder, run folder or Hub repo id
    ids = model.encode(images)                         # (B, 3, H, W) in [-1, 1] -> (B, H/f, W/f), f = model.downsample
    recon = model.decode_indices(ids)
"""
from .errors import (CheckpointError, ConfigError, DataError, HubError, ImageError,
                     MissingWeightsError, VQExploreError)
from .hub import list_checkpoints, resolve
from .models import VQModel, VQModelOutput, load
from .quantizers import FSQ, QuantizerOutput, SimVQ, VectorQuantizer

__version__ = "0.1.0"

__all__ = [
    "VQModel", "VQModelOutput", "load", "resolve", "list_checkpoints",
    "VectorQuantizer", "FSQ", "SimVQ", "QuantizerOutput",
    "VQExploreError", "ConfigError", "CheckpointError", "HubError", "ImageError", "DataError",
    "MissingWeightsError",
]
