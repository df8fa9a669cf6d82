"""Rate-distortion of tokenizers: how many bits per image buy how much reconstruction quality.

Two rates per checkpoint, both in bits per image:

- ``bits (fixed)`` = tokens x log2 K: what storing the ids with a fixed-width code costs;
- ``bits (entropy)`` = tokens x H, H the empirical entropy (bits) of the token distribution on
  the validation images: what a downstream model that learned the code frequencies would pay
  (``H = log2(perplexity)``, since perplexity = exp of the entropy in nats).

Distortion: PSNR / SSIM (LPIPS where its weights exist) on the same images. Points come from
:func:`vqexplore.analysis.comparison_row` rows (the Compare page's table), from evaluated run
folders (:func:`points_from_runs`), or from the CPU sweep's markdown tables
(:func:`points_from_sweep_table`, ``docs/cpu_sweep.md``).
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .describe import remedy
from .runlayout import EVAL_METRICS

__all__ = ["RatePoint", "entropy_bits", "tokens_per_image", "point_from_row", "point_from_metrics",
           "points_from_runs", "points_from_sweep_table", "rate_distortion_table", "RD_COLUMNS"]

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


_QUANTIZER_NAMES = {"vq": "VQ", "fsq": "FSQ", "simvq": "SimVQ", "lfq": "LFQ", "bsq": "BSQ", "ibq": "IBQ"}


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
    return RatePoint(name, _QUANTIZER_NAMES.get(config.get("quantizer", "vq"), str(config.get("quantizer"))),
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
                                             source=f"{run.name} step {step} metrics.json"))
        except Exception:  # a half-written or foreign folder: not a point
            continue
    return points


_TABLE_TITLES = (  # (title prefix, quantizer, config extras)
    ("VQ-VAE with EMA", "vq", {"ema_update": True}),
    ("VQ-VAE", "vq", {}),
    ("FSQ-VAE", "fsq", {}),
    ("SimVQ-VAE", "simvq", {}),
)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def points_from_sweep_table(path: str | Path) -> list[RatePoint]:
    """Points of the rows ``python -m trainer sweep`` wrote: from the JSON it writes beside the
    markdown (``docs/cpu_sweep.json``: name, model config, image size, metrics of every row), or,
    for a table written before that file existed, from the markdown tables themselves (one per row
    of the VQ, FSQ, SimVQ and EMA tables, image size and number of validation images from its
    "Setup" line). A file without either raises ValueError."""
    path = Path(path)
    rows_file = path.with_suffix(".json")
    if rows_file.is_file():
        try:
            rows = json.loads(rows_file.read_text(encoding="utf-8"))["rows"]
            return [point_from_metrics(r["name"], r["config"], r["metrics"], image_size=r["image_size"],
                                       source=rows_file.name) for r in rows]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{rows_file} is not a sweep's rows file ({e}); rerun `python -m trainer sweep`") from None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{path} cannot be read ({e.strerror}); run `python -m trainer sweep configs/cpu`") from None
    m = re.search(r"at (\d+)x(\d+)", text)
    size = int(m.group(1)) if m else 64
    m = re.search(r"validation split \((\d+) images\)", text)
    source = f"{path.name} ({m.group(1)} images)" if m else path.name
    points: list[RatePoint] = []
    lines = text.splitlines()
    title = None
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.endswith(":") and not line.startswith("|"):
            title = line
        if line.startswith("|") and i + 1 < len(lines) and set(lines[i + 1].strip()) <= set("|-: "):
            header = _cells(line)
            i += 2
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(dict(zip(header, _cells(lines[i]))))
                i += 1
            kind = next((t for t in _TABLE_TITLES if title and title.startswith(t[0])), None)
            if kind is None or "perplexity" not in header:
                continue
            for row in rows:
                points.append(_sweep_point(row, kind, size, source))
            continue
        i += 1
    if not points:
        raise ValueError(f"{path} holds no sweep tables (VQ-VAE:, FSQ-VAE:, ...); "
                         f"write them with `python -m trainer sweep configs/cpu`")
    return points


def _float(text: str | None) -> float | None:
    try:
        return float(str(text).rstrip("%"))
    except (TypeError, ValueError):
        return None


def _sweep_point(row: Mapping[str, str], kind: tuple, size: int, source: str) -> RatePoint:
    _, quantizer, extra = kind
    config: dict = {"quantizer": quantizer, **extra}
    if "code dim" in row:
        config["code_dim"] = int(row["code dim"])
    config["codebook_size"] = int(row["codebook size"])
    if row.get("l2 norm") == "yes":
        config["l2_norm"] = True
    ent = re.match(r"yes \(([\d.e-]+)\)", row.get("entropy reg", ""))
    if ent:
        config["entropy_reg"] = float(ent.group(1))
    if "levels" in row:
        config["levels"] = [int(v) for v in row["levels"].strip("[]").split(",")]
    name = _sweep_name(config)
    metrics = {"perplexity": _float(row.get("perplexity")), "psnr": _float(row.get("PSNR")),
               "ssim": _float(row.get("SSIM")), "lpips": _float(row.get("LPIPS")),
               "codebook_size": config["codebook_size"]}
    return point_from_metrics(name, config, metrics, image_size=size, source=source)


def _sweep_name(config: Mapping) -> str:
    """The configs/cpu row name a config corresponds to (vq-512, vq-d8-2048, fsq-888, ...)."""
    q, k = config["quantizer"], config["codebook_size"]
    if q == "fsq":
        return "fsq-" + "".join(str(v) for v in config.get("levels", []))
    if q == "simvq":
        return f"simvq-{k}"
    prefix = "vq-ema" if config.get("ema_update") else "vq-l2" if config.get("l2_norm") else \
        "vq-entropy" if config.get("entropy_reg") else "vq"
    if config.get("code_dim") not in (None, 64):
        prefix += f"-d{config['code_dim']}"
    return f"{prefix}-{k}"


def rate_distortion_table(points: Iterable[RatePoint]):
    """pandas DataFrame of points, columns :data:`RD_COLUMNS`, sorted by entropy bits."""
    import pandas as pd

    frame = pd.DataFrame([p.as_row() for p in points], columns=list(RD_COLUMNS))
    return frame.sort_values("bits (entropy)", kind="stable").reset_index(drop=True)
