"""Small helpers shared by the library, the trainer and the apps: one copy of each.

- :func:`eval_mode`: run a block with a model in eval mode, then restore the mode it had;
- :func:`write_atomic`: write a file so that readers see the old or the new content, never half;
- :func:`cache_dir`: the one folder for computed caches (``$VQEXPLORE_CACHE_DIR``);
- :func:`flatten`: nested mappings -> one level of ``a.b`` keys;
- :func:`parse_size`: ``"384mb"`` -> bytes (the size syntax of every size setting).
"""
from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:  # no torch import: the apps read stored results through this module without it
    from torch import nn

CACHE_ENV = "VQEXPLORE_CACHE_DIR"
OLD_CACHE_ENV = "VQEXPLORE_CACHE"  # deprecated spelling, still read (the Downsampled ImageNet cache used it)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``with eval_mode(model):`` runs the block with ``model.eval()`` (no EMA codebook updates,
    no dead-code restarts) and puts back the train/eval mode the model had, even on errors."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def write_atomic(path: str | Path, content: str | bytes | Callable[[IO[bytes]], None], *,
                 durable: bool = True) -> Path:
    """Write ``content`` (text as UTF-8, bytes, or a function that writes into a binary file) to
    ``path`` through a temporary file beside it that is renamed into place: a reader, or a run
    killed half-way, sees the old file or the new one, never part of it.

    ``durable`` also fsyncs the file and its folder (the file survives a crash of the machine),
    for run folders and checkpoints; caches can skip it. The file gets the permissions of a
    plain ``open()`` (umask), unlike ``tempfile.mkstemp``'s 0600, so other users can read it.
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "xb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new file inside ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cache_dir() -> Path:
    """The folder for computed caches (projections, converted datasets): ``$VQEXPLORE_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/vqexplore`` (``~/.cache/vqexplore``). ``$VQEXPLORE_CACHE`` is the
    deprecated name of the same setting and still honoured (with a warning)."""
    env = os.environ.get(CACHE_ENV)
    if not env and os.environ.get(OLD_CACHE_ENV):
        warnings.warn(f"{OLD_CACHE_ENV} is deprecated; set {CACHE_ENV} instead", DeprecationWarning, stacklevel=2)
        env = os.environ[OLD_CACHE_ENV]
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vqexplore"


def flatten(mapping: Mapping, prefix: str = "", sep: str = ".") -> dict:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}`` (nested mappings joined with ``sep``)."""
    out = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + sep, sep))
        else:
            out[name] = value
    return out


_SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024 ** 2, "gb": 1024 ** 3}


def parse_size(text: str) -> int | None:
    """``"384mb"`` -> 402653184: a whole number and b, kb, mb or gb (1 kb = 1024 b, Gradio's
    size syntax; case and spaces ignored). None when ``text`` is not such a size or is 0."""
    text = str(text).strip().lower().replace(" ", "")
    digits = len(text) - len(text.lstrip("0123456789"))
    number, unit = text[:digits], text[digits:] or "b"
    if not number or len(number) > 15 or unit not in _SIZE_UNITS or int(number) < 1:
        return None
    return int(number) * _SIZE_UNITS[unit]
