"""Errors a user can cause. Each message is one sentence that says what to do."""


class VQExploreError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class ConfigError(VQExploreError, ValueError):
    """A configuration value is unknown, of the wrong type or impossible.

    ``key`` names the offending key when known (``"levels[1]"``, ``"train.lr"``) and ``problem``
    says what is wrong with it; ``str(error)`` is ``"<key>: <problem>"``. A caller that nests a
    config under a section prefixes the key with :meth:`under` instead of rewriting the text.
    """

    def __init__(self, problem: str, *, key: str | None = None):
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}" if key else problem)

    def under(self, section: str) -> "ConfigError":
        """The same error one level down: key ``levels`` under ``model`` -> ``model.levels``."""
        return ConfigError(self.problem, key=f"{section}.{self.key}" if self.key else section)


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
