"""Which codes survive training: match the codes of two checkpoints and follow them.

Code ids are arbitrary: between two checkpoints (two steps of a run, or two runs) a code may keep
its id and move, or another code may take over its role. :func:`align_codebooks` matches the
codes of checkpoint A to those of checkpoint B by a one-to-one assignment on the codebook
vectors (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``, euclidean cost), and
:func:`token_agreement` measures how many tokens of the same images get the same code once A's
ids are translated to B's.

Size: an exact assignment on a K x K cost matrix costs O(K^3) time and K^2 memory (16,384 codes:
2 GB of float64 costs and hours). Only *live* codes (used on the sample images) matter for tokens,
so the assignment runs on the live codes of each side, at most ``max_exact`` per side (the most
used ones; 4,096 x 4,096 takes about 5 s on one core even for unrelated codebooks). Every other
code of A (dead, or beyond ``max_exact``) is mapped greedily to its nearest code of B (chunked
search, not one-to-one); ``CodeAlignment.exact`` says which codes the assignment matched.

A matched pair *persists* when both codes are live and the pair is closer than ``threshold``
(default: the median distance between a live code of B and its nearest other live code of B,
i.e. the codebook's own spacing): the code moved less than codes are apart.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["CodeAlignment", "align_codebooks", "align_models", "token_agreement", "AlignedUsage",
           "aligned_usage_over_steps", "MAX_EXACT"]

MAX_EXACT = 4096


def _np(vectors) -> np.ndarray:
    if isinstance(vectors, Tensor):
        vectors = vectors.detach().float().cpu().numpy()
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise ValueError(f"codebook vectors must be (K, D), got shape {arr.shape}")
    return arr


def _nearest(queries: np.ndarray, codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest codebook row of every query (chunked): ids (N,), euclidean distances (N,)."""
    from .quantizers import nearest_code

    if queries.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    ids = nearest_code(torch.from_numpy(queries), torch.from_numpy(codebook)).numpy()
    dist = np.linalg.norm(queries - codebook[ids], axis=1).astype(np.float32)
    return ids.astype(np.int64), dist


def _spacing(vectors: np.ndarray) -> float:
    """Median distance from each vector to its nearest other vector (0 for fewer than 2)."""
    if vectors.shape[0] < 2:
        return 0.0
    from sklearn.neighbors import NearestNeighbors

    dist, _ = NearestNeighbors(n_neighbors=2, algorithm="brute").fit(vectors).kneighbors(vectors)
    return float(np.median(dist[:, 1]))


@dataclass
class CodeAlignment:
    """Codes of checkpoint A matched to codes of checkpoint B.

    mapping: int64 (K_a,) the B id of every A code; distance: float32 (K_a,) euclidean distance
    between the two vectors; exact: bool (K_a,) matched by the one-to-one assignment (else by
    nearest code); live_a: bool (K_a,), live_b: bool (K_b,) codes used on the sample (all True
    without counts); persists: bool (K_a,) see the module docstring; threshold: the distance
    below which a live pair persists; method: how the matching was done, in words.
    """

    mapping: np.ndarray
    distance: np.ndarray
    exact: np.ndarray
    live_a: np.ndarray
    live_b: np.ndarray
    persists: np.ndarray
    threshold: float
    method: str

    @property
    def num_persisting(self) -> int:
        return int(self.persists.sum())

    @property
    def same_id(self) -> int:
        """Persisting codes that also kept their id."""
        return int((self.persists & (self.mapping == np.arange(self.mapping.size))).sum())

    def summary(self) -> dict:
        """JSON-able counts: live codes on each side, persisting, persisting with the same id,
        matched one-to-one, and the threshold."""
        return {"live A": int(self.live_a.sum()), "live B": int(self.live_b.sum()),
                "persisting": self.num_persisting, "persisting, same id": self.same_id,
                "matched one-to-one": int(self.exact.sum()), "threshold": self.threshold,
                "method": self.method}

    def pairs(self, counts_a: np.ndarray | None = None, counts_b: np.ndarray | None = None, *,
              only_live: bool = True):
        """pandas DataFrame of the matched pairs (code A, code B, distance, persists, counts),
        live A codes only by default, most used first when counts are given."""
        import pandas as pd

        ids = np.flatnonzero(self.live_a) if only_live else np.arange(self.mapping.size)
        frame = pd.DataFrame({"code A": ids, "code B": self.mapping[ids], "distance": self.distance[ids],
                              "persists": self.persists[ids], "one-to-one": self.exact[ids]})
        if counts_a is not None:
            frame["count A"] = np.asarray(counts_a)[ids]
        if counts_b is not None:
            frame["count B"] = np.asarray(counts_b)[self.mapping[ids]]
        if counts_a is not None:
            frame = frame.sort_values("count A", ascending=False, kind="stable")
        return frame.reset_index(drop=True)


def _top_live(counts: np.ndarray | None, size: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """(live mask (K,), ids for the assignment: the live codes, the ``limit`` most used)."""
    if counts is None:
        live = np.ones(size, dtype=bool)
        ids = np.arange(size)
    else:
        counts = np.asarray(counts).reshape(-1)
        if counts.shape != (size,):
            raise ValueError(f"counts must be ({size},), got {counts.shape}")
        live = counts > 0
        ids = np.flatnonzero(live)
        if ids.size > limit:
            ids = ids[np.argsort(-counts[ids], kind="stable")]
    if ids.size > limit:
        ids = ids[:limit]
    return live, np.sort(ids)


def align_codebooks(vectors_a, vectors_b, *, counts_a: np.ndarray | None = None, counts_b: np.ndarray | None = None,
                    max_exact: int = MAX_EXACT, threshold: float | None = None) -> CodeAlignment:
    """Match the codes of A (K_a, D) to the codes of B (K_b, D) (see the module docstring).

    counts_a / counts_b: (K,) usage of each code on the same images; without them every code
    counts as live (then codebooks above ``max_exact`` codes are matched on their first
    ``max_exact`` ids exactly and greedily beyond). threshold: persistence distance (default:
    the median nearest-neighbour distance among B's live codes).
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    a, b = _np(vectors_a), _np(vectors_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the codebooks have different code dimensions ({a.shape[1]} and {b.shape[1]}); "
                         f"codes can only be matched within one space")
    live_a, rows = _top_live(counts_a, a.shape[0], max_exact)
    live_b, cols = _top_live(counts_b, b.shape[0], max_exact)
    mapping, distance = _nearest(a, b)  # greedy for everything; the assignment overrides below
    exact = np.zeros(a.shape[0], dtype=bool)
    if rows.size and cols.size:
        cost = cdist(a[rows], b[cols])
        r, c = linear_sum_assignment(cost)
        mapping[rows[r]] = cols[c]
        distance[rows[r]] = cost[r, c].astype(np.float32)
        exact[rows[r]] = True
    if threshold is None:
        threshold = _spacing(b[live_b])
    persists = exact & live_a & live_b[mapping] & (distance <= threshold)
    n_live = int(live_a.sum()), int(live_b.sum())
    capped = " (the most used ones)" if max(n_live) > max_exact else ""
    method = (f"Hungarian assignment on {rows.size} x {cols.size} codes{capped}"
              f"{' (live codes)' if counts_a is not None or counts_b is not None else ''}; "
              f"the other {a.shape[0] - int(exact.sum())} codes of A mapped to their nearest code of B")
    return CodeAlignment(mapping, distance.astype(np.float32), exact, live_a, live_b, persists, float(threshold),
                         method)


@torch.no_grad()
def align_models(model_a, model_b, images: Tensor | None = None, *, max_exact: int = MAX_EXACT,
                 threshold: float | None = None, batch_size: int = 64) -> tuple[CodeAlignment, dict]:
    """:func:`align_codebooks` of two models, with live codes and token agreement measured on
    ``images`` (B, 3, H, W) in [-1, 1] when given. Returns the alignment and a dict with
    ``agreement_raw`` / ``agreement_aligned`` (fractions of tokens, None without images) and the
    (K,) counts of each side."""
    from .analysis import encode_indices
    from .metrics import code_counts

    ids_a = ids_b = counts_a = counts_b = None
    if images is not None:
        ids_a, ids_b = encode_indices(model_a, images, batch_size), encode_indices(model_b, images, batch_size)
        counts_a = code_counts(torch.from_numpy(ids_a), model_a.codebook_size).numpy()
        counts_b = code_counts(torch.from_numpy(ids_b), model_b.codebook_size).numpy()
    alignment = align_codebooks(model_a.codebook_vectors(), model_b.codebook_vectors(), counts_a=counts_a,
                                counts_b=counts_b, max_exact=max_exact, threshold=threshold)
    info = {"agreement_raw": None, "agreement_aligned": None, "counts_a": counts_a, "counts_b": counts_b}
    if ids_a is not None:
        same_size = model_a.codebook_size == model_b.codebook_size
        info["agreement_raw"] = float((ids_a == ids_b).mean()) if same_size and ids_a.shape == ids_b.shape else None
        info["agreement_aligned"] = token_agreement(ids_a, ids_b, alignment.mapping)
    return alignment, info


def token_agreement(ids_a: np.ndarray, ids_b: np.ndarray, mapping: np.ndarray | None = None) -> float:
    """Fraction of tokens (same images, same positions) where B's code equals A's code
    translated by ``mapping`` (A id -> B id; identity when None). ids: int (..., h, w) alike."""
    ids_a, ids_b = np.asarray(ids_a), np.asarray(ids_b)
    if ids_a.shape != ids_b.shape:
        raise ValueError(f"token grids differ in shape: {ids_a.shape} and {ids_b.shape}")
    translated = ids_a if mapping is None else np.asarray(mapping)[ids_a]
    return float((translated == ids_b).mean()) if ids_a.size else float("nan")


@dataclass
class AlignedUsage:
    """Codes x steps usage in which row r follows one code through the run.

    steps: (S,) oldest first; counts: (K, S) int64 where row r is the code that has id r in the
    last checkpoint, traced back through the alignments (column s: that code's count at
    steps[s]); ids: (K, S) the id the followed code has at each step; persisting: (S-1,) codes
    that persist from each checkpoint to the next; agreement: (S-1,) aligned token agreement
    between consecutive checkpoints.
    """

    steps: np.ndarray
    counts: np.ndarray
    ids: np.ndarray
    persisting: np.ndarray
    agreement: np.ndarray

    @property
    def moved(self) -> int:
        """Followed codes whose id is not the same at every step (drawn as one row anyway)."""
        return int((self.ids != self.ids[:, -1:]).any(axis=1).sum())


@torch.no_grad()
def aligned_usage_over_steps(run_dir: str | Path, images: Tensor, *, max_checkpoints: int | None = 12,
                             loader: Callable | None = None, max_exact: int = MAX_EXACT,
                             batch_size: int = 64) -> AlignedUsage:
    """Per-code usage of a run's checkpoints (as :func:`vqexplore.analysis.usage_over_steps`),
    with each row following a code through consecutive alignments instead of a fixed id, so that
    a code that changes id is not drawn as a death plus a birth. Needs at least 2 checkpoints."""
    from .analysis import encode_indices
    from .hub import list_checkpoints
    from .models import load
    from .metrics import code_counts

    loader = loader or load
    ckpts = list_checkpoints(run_dir)
    if len(ckpts) < 2:
        raise ValueError(f"{run_dir} needs at least 2 checkpoints/step-N/ folders to follow codes")
    if max_checkpoints and len(ckpts) > max_checkpoints:
        keep = np.unique(np.linspace(0, len(ckpts) - 1, max_checkpoints).round().astype(int))
        ckpts = [ckpts[i] for i in keep]
    steps, counts, vectors, ids = [], [], [], []
    for step, path in ckpts:
        model = loader(path)
        grid = encode_indices(model, images, batch_size)
        c = code_counts(torch.from_numpy(grid), model.codebook_size).numpy()
        if counts and c.shape != counts[0].shape:
            raise ValueError(f"{path} has {c.shape[0]} codes but earlier checkpoints of the run have "
                             f"{counts[0].shape[0]}")
        steps.append(step)
        counts.append(c)
        vectors.append(model.codebook_vectors().detach().float().cpu().numpy())
        ids.append(grid)
    k, s = counts[0].shape[0], len(steps)
    follow = np.empty((k, s), dtype=np.int64)
    follow[:, -1] = np.arange(k)
    persisting, agreement = np.zeros(s - 1, np.int64), np.zeros(s - 1, np.float64)
    # Walk backwards: align checkpoint s-1 (as A) to s (as B); the inverse of the one-to-one part
    # tells which earlier code each followed code was. Codes outside the assignment keep their id.
    for j in range(s - 2, -1, -1):
        al = align_codebooks(vectors[j], vectors[j + 1], counts_a=counts[j], counts_b=counts[j + 1],
                             max_exact=max_exact)
        persisting[j] = al.num_persisting
        agreement[j] = token_agreement(ids[j], ids[j + 1], al.mapping)
        back = np.arange(k)
        matched = np.flatnonzero(al.exact)
        targets = al.mapping[matched]
        # B codes claimed by an exact match point back to their A code; an A code that was
        # matched elsewhere must not also be reached through its own id.
        back[targets] = matched
        claimed = np.zeros(k, dtype=bool)
        claimed[matched] = True
        free_b = np.setdiff1d(np.arange(k), targets)
        free_a = np.flatnonzero(~claimed)
        free_a_set = np.isin(free_b, free_a)
        back[free_b[free_a_set]] = free_b[free_a_set]
        # B codes whose own id was taken by a match get the remaining unclaimed A ids, in order.
        leftover_b = free_b[~free_a_set]
        leftover_a = np.setdiff1d(free_a, free_b[free_a_set])
        back[leftover_b] = leftover_a[:leftover_b.size]
        follow[:, j] = back[follow[:, j + 1]]
    table = np.stack(counts, axis=1)
    followed = table[follow, np.arange(s)[None, :]]
    return AlignedUsage(np.asarray(steps, np.int64), followed.astype(np.int64), follow, persisting, agreement)
