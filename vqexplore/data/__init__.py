"""Images in, tensors out: robust image decoding, built-in photos, datasets and loaders.

Tensors are float32 ``(3, H, W)`` (or batched ``(B, 3, H, W)``) in ``[-1, 1]``; numpy images are
uint8 ``(H, W, 3)`` RGB. One module per subject:

- ``decode``: ``load_image`` (any format/mode, limits, one-sentence ``ImageError``s), tensor
  conversion, ``center_crop``, ``fit_to_multiple``.
- ``base``: what datasets share (items keyed by ``(seed, epoch, index)``, in-memory decoding).
- ``builtin``: the eight built-in photos (``"builtin"``).
- ``corpus``: the photo corpus (``"photos"``): photographs shipped in ``photos/`` + the built-in
  ones, random-scale crops, and ``PhotoStack`` for batched crops on a GPU.
- ``folders``: folders of images (ImageNet layout or split by path hash).
- ``imagenet64``: the official Downsampled ImageNet files.
- ``hf``: Hugging Face ``datasets`` (``"hf:..."``).
- ``sources``: ``make_dataset`` / ``describe_source`` for every source name.
- ``loaders``: ``EpochSampler``, ``make_loader``, ``iter_batches``, ``validation_batch``.
"""
from __future__ import annotations

from ..lazy import lazy_names

NAMED_SOURCES = ("builtin", "photos")
"""Source names that are not paths: the built-in photos and the photo corpus."""

# Names -> the submodule that defines them, imported on first use (PEP 562): a config can be checked
# (``trainer.config``: NAMED_SOURCES) without importing torch, which the submodules need.
_LAZY = {
    **dict.fromkeys(['IN_MEMORY_BUDGET'], "base"),
    **dict.fromkeys(['BUILTIN_TRAIN_PHOTOS', 'BUILTIN_VAL_PHOTOS', 'BuiltinPhotos', 'builtin_photos'], "builtin"),
    **dict.fromkeys(['PHOTOS_DIR', 'PHOTOS_VAL', 'PhotoCorpus', 'PhotoStack', 'photo_arrays', 'photo_names'],
                    "corpus"),
    **dict.fromkeys(['DEFAULT_MEMORY_BUDGET', 'FIT_MAX_PIXELS', 'MAX_PIXELS', 'MEMORY_BUDGET_ENV', 'center_crop',
                     'decode_peak', 'fit_to_multiple', 'image_to_tensor', 'load_image', 'memory_budget',
                     'tensor_to_image'], "decode"),
    **dict.fromkeys(['IMAGE_EXTENSIONS', 'ImageFolderDataset'], "folders"),
    **dict.fromkeys(['HFImageDataset'], "hf"),
    **dict.fromkeys(['DownsampledImageNet'], "imagenet64"),
    **dict.fromkeys(['EpochSampler', 'iter_batches', 'make_loader', 'validation_batch'], "loaders"),
    **dict.fromkeys(['describe_source', 'make_dataset'], "sources"),
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = [
    "MAX_PIXELS", "FIT_MAX_PIXELS", "IN_MEMORY_BUDGET", "IMAGE_EXTENSIONS",
    "MEMORY_BUDGET_ENV", "DEFAULT_MEMORY_BUDGET", "memory_budget", "decode_peak",
    "BUILTIN_TRAIN_PHOTOS", "BUILTIN_VAL_PHOTOS", "PHOTOS_DIR", "PHOTOS_VAL", "NAMED_SOURCES",
    "load_image", "image_to_tensor", "tensor_to_image", "center_crop", "fit_to_multiple",
    "builtin_photos", "BuiltinPhotos", "photo_names", "photo_arrays", "PhotoCorpus", "PhotoStack",
    "ImageFolderDataset", "DownsampledImageNet", "HFImageDataset",
    "make_dataset", "describe_source", "EpochSampler", "make_loader", "iter_batches",
    "validation_batch",
]
