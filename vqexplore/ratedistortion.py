"""Rate-distortion of tokenizers: how many bits per image buy how much reconstruction quality.

Two rates per checkpoint, both in bits per image:

- ``bits (fixed)`` = tokens x log2 K: what storing the ids with a fixed-width code costs;
- ``bits (entropy)`` = tokens x H, H the empirical entropy (bits) of the token distribution on
  the validation images: what a downstream model that learned the code frequencies would pay
  (``H = log2(perplexity)``, since perplexity = exp of the entropy in nats).

Distortion: PSNR / SSIM (LPIPS where its weights exist) on the same images. Points come from
:func:`vqexplore.analysis.comparison_row` rows (the Compare page's table), from evaluated run
folders (:func:`points_from_runs`), or from a sweep's rows passed in as data (:func:`points_from_sweep_rows`).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .describe import QUANTIZER_NAMES, remedy
from .runlayout import EVAL_METRICS

__all__ = ["RatePoint", "entropy_bits", "tokens_per_image", "point_from_row", "point_from_metrics",
           "points_from_runs", "points_from_sweep_rows", "rate_distortion_table", "RD_COLUMNS"]

RD_COLUMNS = ("checkpoint", "quantizer", "variant", "codebook size", "image size", "tokens", "bits/token (entropy)",
              "bits (fixed)", "bits (entropy)", "PSNR", "SSIM", "LPIPS", "source")


def entropy_bits(counts) -> float:
    """Shannon entropy in bits of the empirical code distribution of a (K,) count (>= 0, at most
    log2 K). All-zero counts raise ValueError."""
    c = np.asarray(counts, dtype=np.float64).reshape(-1)
    total = c.sum()
    if c.size == 0 or total <= 0:
        raise ValueError("counts are empty or all zero: count some tokens first")
    p = c[c > 0] / total
    return float(max(0.0, -(p * np.log2(p)).sum()))


def tokens_per_image(image_size: int | tuple[int, int], downsample: int = 4) -> int:
    """Tokens of one image: (H / downsample) x (W / downsample)."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    return (int(h) // downsample) * (int(w) // downsample)


@dataclass
class RatePoint:
    """One checkpoint on the rate-distortion plane.

    tokens: per image; entropy: bits per token (empirical, on ``num_images`` images);
    psnr dB, ssim in [-1, 1], lpips >= 0 or None; variant: how the quantizer differs from its
    plain form ("plain", "l2", "entropy", "EMA", "code dim 8", ...); source: where the numbers
    come from.
    """

    name: str
    quantizer: str
    variant: str
    codebook_size: int
    image_size: int
    tokens: int
    entropy: float
    psnr: float | None
    ssim: float | None
    lpips: float | None = None
    source: str = ""

    @property
    def bits_fixed(self) -> float:
        return self.tokens * math.log2(self.codebook_size)

    @property
    def bits_entropy(self) -> float:
        return self.tokens * self.entropy

    def as_row(self) -> dict:
        return {"checkpoint": self.name, "quantizer": self.quantizer, "variant": self.variant,
                "codebook size": self.codebook_size, "image size": self.image_size, "tokens": self.tokens,
                "bits/token (entropy)": self.entropy, "bits (fixed)": self.bits_fixed,
                "bits (entropy)": self.bits_entropy, "PSNR": self.psnr, "SSIM": self.ssim, "LPIPS": self.lpips,
                "source": self.source}

    def as_dict(self) -> dict:
        return asdict(self)


def _variant(config: Mapping) -> str:
    parts = []
    if config.get("quantizer", "vq") == "vq":
        if config.get("ema_update"):
            parts.append("EMA")
        if config.get("l2_norm"):
            parts.append("l2")
        if config.get("entropy_reg"):
            parts.append("entropy")
        if config.get("code_dim") not in (None, 64):
            parts.append(f"code dim {config['code_dim']}")
        if remedy(config):
            parts.append(remedy(config))
    elif config.get("quantizer") == "fsq" and config.get("levels"):
        parts.append("levels " + "-".join(str(v) for v in config["levels"]))
    return ", ".join(parts) or "plain"




def _number(value) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def point_from_metrics(name: str, config: Mapping, metrics: Mapping, *, image_size: int | None = None,
                       source: str = EVAL_METRICS) -> RatePoint:
    """A point from a checkpoint's config (config.json) and its metrics (``metrics.json`` of
    ``trainer eval``: perplexity, psnr, ssim, lpips, image_size, codebook_size). ``image_size``
    overrides the one in ``metrics`` (default 64 when neither has it)."""
    perplexity = _number(metrics.get("perplexity"))
    if perplexity is None or perplexity < 1:
        raise ValueError(f"{name}: metrics have no perplexity (run `python -m trainer eval` on it)")
    size = int(image_size or metrics.get("image_size") or 64)
    k = int(metrics.get("codebook_size") or config.get("codebook_size") or 0)
    if k < 1:
        raise ValueError(f"{name}: the codebook size is unknown")
    n = metrics.get("num_images")
    return RatePoint(name, QUANTIZER_NAMES.get(config.get("quantizer", "vq"), str(config.get("quantizer"))),
                     _variant(config), k, size, tokens_per_image(size), math.log2(perplexity),
                     _number(metrics.get("psnr")), _number(metrics.get("ssim")), _number(metrics.get("lpips")),
                     f"{source} ({n} images)" if n else source)


def point_from_row(row: Mapping, config: Mapping, image_size: int) -> RatePoint:
    """A point from a :func:`vqexplore.analysis.comparison_row` row (its perplexity, PSNR, SSIM,
    LPIPS and "metrics from") and the checkpoint's config. ``image_size``: side of the images
    the row's perplexity was measured on."""
    metrics = {"perplexity": row.get("perplexity"), "psnr": row.get("PSNR"), "ssim": row.get("SSIM"),
               "lpips": row.get("LPIPS"), "codebook_size": row.get("codebook size") or config.get("codebook_size")}
    return point_from_metrics(str(row.get("checkpoint")), config, metrics, image_size=image_size,
                              source=str(row.get("metrics from") or ""))


def points_from_runs(runs_root: str | Path) -> list[RatePoint]:
    """One point per run folder under ``runs_root`` whose newest checkpoint has a metrics.json
    (``python -m trainer eval``), named after the run. Runs without one are skipped."""
    from .hub import list_checkpoints, read_config, read_metrics

    points = []
    root = Path(runs_root)
    if not root.is_dir():
        return points
    for run in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        ckpts = list_checkpoints(run)
        if not ckpts:
            continue
        step, path = ckpts[-1]
        metrics = read_metrics(path)
        if not metrics or _number(metrics.get("perplexity")) is None:
            continue
        try:
            points.append(point_from_metrics(run.name, read_config(path / "config.json"), metrics,
                                             source=f"{run.name} step {step} {EVAL_METRICS}"))
        except Exception:  # a half-written or foreign folder: not a point
            continue
    return points


def points_from_sweep_rows(rows: Iterable[Mapping], source: str = "sweep") -> list[RatePoint]:
    """Points of a sweep's rows, given as data (each: ``name``, model ``config``, ``image_size``,
    ``metrics``; ``python -m trainer sweep`` writes them, ``trainer.sweep.read_rows`` reads them)."""
    return [point_from_metrics(r["name"], r["config"], r["metrics"], image_size=r["image_size"], source=source)
            for r in rows]


def rate_distortion_table(points: Iterable[RatePoint]):
    """pandas DataFrame of points, columns :data:`RD_COLUMNS`, sorted by entropy bits."""
    import pandas as pd

    frame = pd.DataFrame([p.as_row() for p in points], columns=list(RD_COLUMNS))
    return frame.sort_values("bits (entropy)", kind="stable").reset_index(drop=True)
