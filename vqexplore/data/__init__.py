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

from .base import IN_MEMORY_BUDGET
from .builtin import BUILTIN_TRAIN_PHOTOS, BUILTIN_VAL_PHOTOS, BuiltinPhotos, builtin_photos
from .corpus import PHOTOS_DIR, PHOTOS_VAL, PhotoCorpus, PhotoStack, photo_arrays, photo_names
from .decode import (FIT_MAX_PIXELS, MAX_PIXELS, center_crop, fit_to_multiple, image_to_tensor, load_image,
                     tensor_to_image)
from .folders import IMAGE_EXTENSIONS, ImageFolderDataset
from .hf import HFImageDataset
from .imagenet64 import DownsampledImageNet
from .loaders import EpochSampler, iter_batches, make_loader, validation_batch
from .sources import NAMED_SOURCES, describe_source, make_dataset

__all__ = [
    "MAX_PIXELS", "FIT_MAX_PIXELS", "IN_MEMORY_BUDGET", "IMAGE_EXTENSIONS",
    "BUILTIN_TRAIN_PHOTOS", "BUILTIN_VAL_PHOTOS", "PHOTOS_DIR", "PHOTOS_VAL", "NAMED_SOURCES",
    "load_image", "image_to_tensor", "tensor_to_image", "center_crop", "fit_to_multiple",
    "builtin_photos", "BuiltinPhotos", "photo_names", "photo_arrays", "PhotoCorpus", "PhotoStack",
    "ImageFolderDataset", "DownsampledImageNet", "HFImageDataset",
    "make_dataset", "describe_source", "EpochSampler", "make_loader", "iter_batches",
    "validation_batch",
]
