"""Values from YAML or JSON -> the types a signature or dataclass annotates, or a ConfigError
that names the key.

One converter for every config section: ``VQModel`` checks its keyword arguments against its own
annotations with it, and the trainer checks ``data:``, ``train:`` and ``eval:`` the same way, so a
new annotated argument is type-checked without another declaration.
"""
from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from .errors import ConfigError


def type_name(tp) -> str:
    """``int | None`` -> "an integer or null" (for error messages)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(type_name(a) for a in args) + " or null"
    if origin is list:
        return f"a list of {type_name(typing.get_args(tp)[0])}s"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(tp, str(tp))


def convert(key: str, value: Any, tp) -> Any:
    """``value`` as type ``tp`` (bool, int, float, str, ``X | None``, ``list[X]``), or ConfigError
    naming ``key``. Strict: nothing is converted from a string ("0.1" is not a number) and a float
    is not an integer (16.0 is not an integer); an integer is a number. YAML files and ``key=value``
    overrides are read by ``trainer.strict_yaml``, which reads 4e-4 as a number and 5e5 as an integer."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(key, value, arg)
            except ConfigError:
                pass
        raise ConfigError(f"expected {type_name(tp)}, got {value!r}", key=key)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected {type_name(tp)}, got {value!r}", key=key)
        return [convert(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    hint = ""
    if isinstance(value, str) and tp in (int, float):
        hint = "; write the number without quotes"
    elif isinstance(value, float) and tp is int:
        hint = "; write it without a decimal point"
    raise ConfigError(f"expected {type_name(tp)}, got {_short(value)}{hint}", key=key)


def _short(value: Any) -> str:
    """repr of a value for a message, at most 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def unknown_key(key: Any, known, accepted_by: str) -> ConfigError:
    """The error for a key that ``accepted_by`` does not take, with the closest known key."""
    match = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f" (did you mean {match[0]}?)" if match else ""
    return ConfigError(f"unknown key{hint}; {accepted_by} accepts {', '.join(sorted(known))}", key=str(key))


def check_keywords(values: dict, hints: dict[str, Any], accepted_by: str) -> dict:
    """Every key of ``values`` known to ``hints`` (name -> annotation) and of its type.

    Returns the converted values; raises ConfigError naming the first bad key."""
    if not isinstance(values, dict):
        raise ConfigError(f"expected a mapping of keys, got {values!r}")
    out = {}
    for key, value in values.items():
        if key not in hints:
            raise unknown_key(key, hints, accepted_by)
        out[key] = convert(key, value, hints[key])
    return out
