"""Codebook health: why codes are dead, and which remedies address it.

A code is *dead* when no encoder output of the sample picks it. Two causes call for different
remedies, and the distance from each code to its nearest encoder output tells them apart:

- **far from the data**: the code sits farther from every encoder output than live codes sit from
  theirs. It was never pulled into the data (a bad init, or the encoder moved away). Remedies:
  k-means init, dead-code restart, l2-normalised codes.
- **outcompeted**: the code sits among the encoder outputs, but a neighbour is nearer to each of
  them. The codebook is crowded where the data is. Remedies: entropy regularisation, a smaller
  code dimension, or a quantizer whose codes cannot crowd (FSQ, SimVQ, LFQ/BSQ).

A wide spread of code norms (some codes far longer than others) is a third sign: l2-normalised
codes remove it. Everything here is computed in the code space (``quantizer.to_code_space``).

The advice reads the checkpoint's config (``model.config``, :func:`remedies_of`): a remedy the
checkpoint already uses is never recommended; the diagnosis says it is on and what to try next.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .quantizers import nearest_code

# A dead code is "far from the data" when its nearest encoder output is farther than this many
# times the live codes' typical (median) distance to theirs.
FAR_FACTOR = 1.5

# The remedies the diagnosis names. Which trained rows tried each one is data the caller passes
# (``remedy_rows``: remedy -> row names, e.g. ``trainer.sweep.remedy_rows`` of the CPU sweep's rows).
REMEDIES = ("k-means init", "dead-code restart", "l2-normalised codes", "entropy regularisation",
            "a smaller code dimension", "rotation trick", "FSQ, SimVQ, LFQ or BSQ")


def remedies_of(config) -> tuple[str, ...]:
    """The :data:`REMEDIES` a model config (``VQModel.config``) turns on."""
    q = config.get("quantizer")
    tried = {"k-means init": bool(config.get("kmeans_init")),
             "dead-code restart": bool(config.get("dead_code_threshold")),
             "l2-normalised codes": bool(config.get("l2_norm")),
             "entropy regularisation": bool(config.get("entropy_reg")),
             "a smaller code dimension": q in ("vq", "ibq") and (config.get("code_dim") or 64) < 64,
             "rotation trick": bool(config.get("rotation_trick")),
             "FSQ, SimVQ, LFQ or BSQ": q in ("fsq", "simvq", "lfq", "bsq")}
    return tuple(r for r in REMEDIES if tried[r])


@dataclass
class CodebookHealth:
    """codebook_size K; counts (K,) tokens per code on the sample; nearest (K,) distance from each
    code to its nearest encoder output; norms (K,) code norms; far_threshold: ``FAR_FACTOR`` x
    the live codes' median distance; explicit: False for implicit grids (FSQ, LFQ, BSQ), whose codes
    cannot move; diagnosis: plain sentences, most important first."""

    codebook_size: int
    counts: np.ndarray
    nearest: np.ndarray
    norms: np.ndarray
    far_threshold: float
    explicit: bool
    diagnosis: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    @property
    def dead(self) -> np.ndarray:
        return self.counts == 0

    @property
    def dead_far(self) -> int:
        """Dead codes farther from the data than nearly every live code."""
        return int((self.dead & (self.nearest > self.far_threshold)).sum())

    @property
    def dead_near(self) -> int:
        """Dead codes among the data, outcompeted by a neighbour."""
        return int(self.dead.sum()) - self.dead_far

    @property
    def norm_spread(self) -> float:
        """Coefficient of variation of the code norms (std / mean); 0 for unit-norm codes."""
        mean = float(self.norms.mean())
        return float(self.norms.std() / mean) if mean > 0 else 0.0

    @property
    def norms_constant(self) -> bool:
        """True when every code has the same norm up to float rounding (l2-normalised codes: all 1),
        so a spread plot would only draw rounding noise."""
        top = max(float(np.abs(self.norms).max()), 1e-12) if self.norms.size else 0.0
        return bool(self.norms.size) and float(np.ptp(self.norms)) <= 1e-4 * top


def _nearest_distance(codes: torch.Tensor, latents: torch.Tensor) -> np.ndarray:
    """(K,) euclidean distance from every code to its nearest latent (chunked search)."""
    idx = nearest_code(codes, latents)
    return (codes - latents[idx]).norm(dim=1).numpy()


@torch.no_grad()
def codebook_health(model, latents: np.ndarray, counts: np.ndarray,
                    remedy_rows: Mapping[str, Sequence[str]] | None = None) -> CodebookHealth:
    """Health of ``model``'s codebook given encoder outputs in code space ``latents`` (M, D) (e.g.
    ``projection.encoder_outputs``) and per-code token counts ``counts`` (K,) on the same sample.
    ``remedy_rows``: remedy -> names of trained rows that tried it, quoted in the diagnosis."""
    codes = model.codebook_vectors().detach().float().cpu()
    lat = torch.as_tensor(np.asarray(latents, dtype=np.float32))
    counts = np.asarray(counts)
    if counts.shape != (codes.shape[0],):
        raise ValueError(f"counts must have one entry per code ({codes.shape[0]}), got shape {counts.shape}")
    nearest = _nearest_distance(codes, lat)
    live = counts > 0
    far = FAR_FACTOR * float(np.median(nearest[live])) if live.any() else float("inf")
    # A quantizer whose codes are not learned vectors (a fixed grid) cannot be restarted or moved.
    explicit = any(p.requires_grad for p in model.quantizer.parameters()) or \
        hasattr(model.quantizer, "ema_embed_sum")
    health = CodebookHealth(codes.shape[0], counts, nearest, codes.norm(dim=1).numpy(), far, explicit,
                            config=dict(getattr(model, "config", None) or {}))
    health.diagnosis = diagnose(health, remedy_rows)
    return health


# What each remedy does, said once; the diagnosis picks the ones the checkpoint does not use yet.
_WHAT = {
    "dead-code restart": "dead-code restart moves them onto encoder outputs",
    "k-means init": "k-means init starts them there",
    "l2-normalised codes": "l2-normalised codes keep codes and data on one sphere",
    "entropy regularisation": "entropy regularisation spreads the assignments",
    "a smaller code dimension": "a smaller code dimension makes crowding less likely",
    "FSQ, SimVQ, LFQ or BSQ": "FSQ, SimVQ, LFQ and BSQ avoid dead codes by construction",
    "rotation trick": "the rotation trick sends the encoder better gradients",
}
# Cause -> remedies worth trying, best first.
_FOR_FAR = ("dead-code restart", "k-means init", "l2-normalised codes", "FSQ, SimVQ, LFQ or BSQ")
_FOR_CROWDED = ("entropy regularisation", "a smaller code dimension", "FSQ, SimVQ, LFQ or BSQ", "dead-code restart")


def _advice(candidates: tuple[str, ...], h: CodebookHealth, tried) -> str:
    """One sentence naming the candidates the checkpoint does not use yet (``tried(remedy)``: where
    each was tried), what it already uses, and what to try when nothing is left."""
    used = set(remedies_of(h.config))
    fresh = [r for r in candidates if r not in used]
    already = [r for r in candidates if r in used]
    parts = []
    if already:
        parts.append("This checkpoint already uses " + " and ".join(already) + ".")
    if fresh:
        sentence = "; ".join(f"{_WHAT[r]}{tried(r)}" for r in fresh)
        sentence = sentence if sentence[:2] == "l2" else sentence[0].upper() + sentence[1:]
        parts.append(("Try next: " if already else "") + sentence + ".")
    nxt = []
    if "dead-code restart" in already:
        t = h.config.get("dead_code_threshold")
        nxt.append(f"a higher `model.dead_code_threshold` (now {t:g}) restarts more codes" if t
                   else "a higher `model.dead_code_threshold` restarts more codes")
    if "entropy regularisation" in already:
        nxt.append(f"a larger `model.entropy_reg` (now {h.config.get('entropy_reg'):g})")
    if already and not fresh:
        nxt.append("a smaller codebook, or longer training on more varied data")
    if nxt:
        parts.append("Beyond that: " + "; ".join(nxt) + ".")
    return " ".join(parts)


def diagnose(h: CodebookHealth, remedy_rows: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """Plain-words reading of a :class:`CodebookHealth`, naming remedies and, where ``remedy_rows``
    gives them, the trained rows that tried each. A remedy the checkpoint's config already turns on
    (``h.config``) is never recommended: the sentence says it is on and names what to try next."""
    def tried(remedy: str) -> str:
        names = (remedy_rows or {}).get(remedy) or ()
        return " (tried in " + ", ".join(f"`{r}`" for r in names) + ")" if names else ""

    dead = int(h.dead.sum())
    usage = 1 - dead / h.codebook_size
    used = set(remedies_of(h.config))
    out = []
    if usage >= 0.9:
        out.append(f"Healthy: {usage:.0%} of the codes are used on this sample.")
    elif not h.explicit:
        out.append(f"{dead:,} of {h.codebook_size:,} grid points are never reached. This codebook is a fixed "
                   f"grid, so no restart applies: its points go unused because the encoder outputs do not "
                   f"spread over every cell. More varied data, fewer levels or bits, or an entropy term "
                   f"(LFQ/BSQ's) spread them{tried('FSQ, SimVQ, LFQ or BSQ')}.")
    elif h.dead_far >= h.dead_near:
        out.append(f"{h.dead_far:,} of the {dead:,} dead codes lie far from every encoder output (over "
                   f"{FAR_FACTOR:g}x the live codes' typical distance to theirs): they were never pulled into "
                   f"the data. " + _advice(_FOR_FAR, h, tried))
    else:
        out.append(f"{h.dead_near:,} of the {dead:,} dead codes sit among the encoder outputs but a neighbour "
                   f"wins every token: the codebook is crowded where the data is. " + _advice(_FOR_CROWDED, h, tried))
    if h.norms_constant:
        out.append(f"Every code has norm {float(h.norms.mean()):.4g}"
                   + (" (l2-normalised codes)" if "l2-normalised codes" in used else "")
                   + ": code length plays no part in which code wins.")
    elif h.explicit and h.norm_spread > 0.5 and "l2-normalised codes" not in used:
        out.append(f"Code norms vary widely (std/mean {h.norm_spread:.2f}): long codes can win tokens from "
                   f"short ones regardless of direction. l2-normalised codes remove that"
                   f"{tried('l2-normalised codes')}.")
    return out
