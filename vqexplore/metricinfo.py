"""The one registry of the metrics vqexplore reports: key (as in ``metrics.json`` / ``metrics.jsonl``),
label (cards, model cards), table column, unit, display format, and which direction is better.

Every table, card and page that shows a metric takes its label and format from here::

    from vqexplore.metricinfo import METRIC
    METRIC["psnr"].format(24.27)        # "24.27 dB"
    METRIC["usage"].format(0.92)        # "92.0%"
    METRIC["usage"].column              # "usage %"  (comparison tables hold usage in percent)
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str                 # in metrics.json, metrics.jsonl and evaluate()'s dict
    label: str               # cards and model cards: "Codebook usage", "PSNR"
    column: str              # comparison-table column: "usage %", "PSNR"
    unit: str                # "%", "dB" or "" (shown after the number)
    fmt: str                 # format spec of the displayed number
    higher_is_better: bool | None  # None: no better direction (a count of codes, a size)
    scale: float = 1.0       # displayed = stored x scale (usage is stored as a fraction)
    help: str = ""

    def display(self, value) -> float | None:
        """The stored value as shown (x ``scale``); None for a missing or non-finite value."""
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return None
        return float(value) * self.scale

    def format(self, value, *, unit: bool = True) -> str:
        """``value`` (as stored) as text, with its unit; "–" when missing."""
        shown = self.display(value)
        if shown is None:
            return "–"
        text = format(shown, self.fmt)
        return f"{text}{'' if self.unit == '%' else ' '}{self.unit}" if unit and self.unit else text

    @property
    def streamlit_format(self) -> str:
        """printf-style format for ``st.column_config.NumberColumn`` (unit included)."""
        suffix = "%%" if self.unit == "%" else (f" {self.unit}" if self.unit else "")
        return f"%{self.fmt}{suffix}"


METRICS: tuple[Metric, ...] = (
    Metric("usage", "Codebook usage", "usage %", "%", ".1f", True, 100.0,
           "share of the codes used at least once"),
    Metric("perplexity", "Perplexity", "perplexity", "", ".1f", True,
           help="exp of the entropy of the code distribution: the number of equally used codes it equals"),
    Metric("dead_codes", "Dead codes", "dead codes", "", ",.0f", False, help="codes never used"),
    Metric("normalized_entropy", "Normalised entropy", "normalised entropy", "", ".3f", True,
           help="entropy of the code distribution / log K"),
    Metric("psnr", "PSNR", "PSNR", "dB", ".2f", True, help="peak signal-to-noise ratio of the reconstructions"),
    Metric("ssim", "SSIM", "SSIM", "", ".3f", True, help="structural similarity of the reconstructions"),
    Metric("lpips", "LPIPS", "LPIPS", "", ".3f", False, help="learned perceptual distance (AlexNet)"),
    Metric("rfid", "rFID", "rFID", "", ".2f", False, help="reconstruction FID (Inception features)"),
)
METRIC: dict[str, Metric] = {m.key: m for m in METRICS}
BY_COLUMN: dict[str, Metric] = {m.column: m for m in METRICS}

# The metrics of the study's comparison table and the model card, in that order.
TABLE_METRICS: tuple[str, ...] = ("usage", "perplexity", "dead_codes", "psnr", "ssim", "lpips", "rfid")

__all__ = ["Metric", "METRICS", "METRIC", "BY_COLUMN", "TABLE_METRICS"]
