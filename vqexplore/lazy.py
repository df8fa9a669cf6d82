"""Names of a package imported on first use (PEP 562), so that importing the package costs nothing
until one is needed: ``import vqexplore`` and the torch-free modules (``modelconfig``, ``errors``,
``runlayout``) do not import torch, and the trainer refuses a bad config in a fraction of a second."""
from __future__ import annotations

import importlib
import importlib.util


def lazy_names(package: str, names: dict[str, str], namespace: dict):
    """(``__getattr__``, ``__dir__``) for ``package`` whose ``names`` map to the submodule that defines
    them (relative, without the dot); a submodule's own name gives the submodule, as an eager
    ``from .hub import ...`` used to make ``vqexplore.hub`` available. A name, once imported, is stored
    in ``namespace`` (the package's globals), so the next access is a plain attribute."""

    def __getattr__(name: str):
        if name in names:
            value = getattr(importlib.import_module(f".{names[name]}", package), name)
        elif not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f".{name}", package)  # a submodule, e.g. vqexplore.hub
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
