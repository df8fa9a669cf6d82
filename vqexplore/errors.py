"""Errors a user can cause. Each message is one sentence that says what to do."""


class VQExploreError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class ConfigError(VQExploreError, ValueError):
    """A configuration value is unknown, of the wrong type or impossible."""


class CheckpointError(VQExploreError):
    """A checkpoint folder, file or Hub repo cannot be used."""


class HubError(CheckpointError):
    """The Hugging Face Hub cannot be reached or refused the request."""


class ImageError(VQExploreError, ValueError):
    """An input file is not a usable image."""


class DataError(VQExploreError):
    """A data source does not exist or holds no usable images."""


class MissingWeightsError(VQExploreError):
    """Pretrained weights for a metric (LPIPS, rFID) are not available offline."""
