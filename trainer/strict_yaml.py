"""YAML for configs, strictly: a key given twice is an error, and numbers are numbers.

PyYAML (YAML 1.1) keeps the last of two equal keys and reads ``4e-4`` and ``1.0e5`` as strings;
the config types are checked without converting strings, so this loader reads scientific
notation as numbers instead: ``4e-4`` and ``2.5e3`` are floats, ``5e5`` (no point, exponent >= 0)
is the integer 500000. A quoted value (``'0.1'``) stays a string, and so is refused where a
number is expected.
"""
from __future__ import annotations

import re

import yaml

__all__ = ["DuplicateKeyError", "load"]

_EXP_TAG = "tag:vqexplore,2026:exponent"
_EXP_RE = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice; ``key``, and the ``first`` and ``second`` line numbers."""

    def __init__(self, key, first: int, second: int):
        self.key, self.first, self.second = key, first, second
        super().__init__(f"key {key!r} is given twice (lines {first} and {second})")


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise DuplicateKeyError(key, seen[key], line)
                    seen[key] = line
                except TypeError:  # an unhashable key: PyYAML's own error follows
                    continue
        return super().construct_mapping(node, deep)


def _exponent(loader: yaml.SafeLoader, node) -> int | float:
    text = loader.construct_scalar(node).replace("_", "")
    mantissa, exponent = re.split("[eE]", text)
    if "." not in mantissa and 0 <= int(exponent) <= 18 and len(mantissa) <= 20:
        return int(mantissa) * 10 ** int(exponent)
    return float(text)


_StrictLoader.add_implicit_resolver(_EXP_TAG, _EXP_RE, list("-+0123456789."))
_StrictLoader.add_constructor(_EXP_TAG, _exponent)


def load(text: str):
    """Parse YAML ``text`` like ``yaml.safe_load`` (raises ``yaml.YAMLError``), with duplicate keys
    refused (:class:`DuplicateKeyError`) and scientific notation read as numbers."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except (ValueError, RecursionError) as e:  # e.g. an integer of thousands of digits, nesting too deep
        raise yaml.YAMLError(f"a value cannot be read ({type(e).__name__})") from None
