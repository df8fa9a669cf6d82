"""How a VQModel config is described to people: one function, called by the comparison table
(``analysis``), the dashboard's caption (``app/ui.py``), the sweep's tables (``trainer sweep``)
and the model card (``hub.model_card``), so a config reads the same everywhere.

Pure Python on a plain mapping (``model.config``, a ``config.json`` or the trainer's ``model:``
section); no torch import, so anything may use it.
"""
from __future__ import annotations

from collections.abc import Mapping

QUANTIZER_NAMES = {"vq": "VQ", "fsq": "FSQ", "simvq": "SimVQ", "lfq": "LFQ", "bsq": "BSQ", "ibq": "IBQ"}


def describe_config(config: Mapping) -> dict:
    """The study's description of a config, column -> value, in the study's column order:
    quantizer ("VQ"), levels ("[8, 5, 5, 5]" or ""), code dim, codebook size, l2 norm
    ("yes"/"no"), entropy reg ("0.1" or "no"), ema ("yes"/"no"), remedy (:func:`remedy`)."""
    quantizer = config.get("quantizer", "vq")
    levels = config.get("levels")
    return {
        "quantizer": QUANTIZER_NAMES.get(quantizer, str(quantizer)),
        "levels": str(list(levels)) if levels else "",
        "code dim": config.get("code_dim"),
        "codebook size": config.get("codebook_size"),
        "l2 norm": "yes" if config.get("l2_norm") else "no",
        "entropy reg": f"{config['entropy_reg']:g}" if config.get("entropy_reg") else "no",
        "ema": "yes" if config.get("ema_update") else "no",
        "remedy": remedy(config),
    }


def remedy(config: Mapping) -> str:
    """The collapse remedies a VQ config turns on, e.g. "k-means init + dead-code restart 1";
    "" when none."""
    parts = []
    if config.get("kmeans_init"):
        parts.append("k-means init")
    if config.get("dead_code_threshold"):
        parts.append(f"dead-code restart {config['dead_code_threshold']:g}")
    if config.get("rotation_trick"):
        parts.append("rotation trick")
    return " + ".join(parts)


def config_summary(config: Mapping) -> str:
    """:func:`describe_config` on one line, options that are off left out:
    ``"VQ · K=512 · D=64 · l2 norm · entropy reg 0.1"``."""
    d = describe_config(config)
    bits = [d.pop("quantizer"), f"K={d.pop('codebook size')}", f"D={d.pop('code dim')}"]
    if config.get("arch") == "vqgan" and config.get("ch_mult"):
        bits.append(f"VQGAN f{2 ** (len(config['ch_mult']) - 1)}")
    for label, value in d.items():
        if value in ("", "no", None):
            continue
        bits.append(label if value == "yes" else f"{label} {value}")
    return " · ".join(bits)
