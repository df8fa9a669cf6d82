"""The demo's models: the demo set of checkpoints, an in-memory cache that loads each once, and
LPIPS when its pretrained weights exist locally (``gradio_app`` re-exports these).
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

import vqexplore
from vqexplore.hub import checkpoints_in, is_checkpoint_dir
from vqexplore.runlayout import DEMO_CHECKPOINTS

log = logging.getLogger("vqexplore.demo")

DEFAULT_CHECKPOINTS = DEMO_CHECKPOINTS
EXTRA_MODEL_CACHE = 8         # typed Hub models kept in memory (demo models are always kept)


# --------------------------------------------------------------------------------------------
# Checkpoints: the demo set and an in-memory cache (each model is loaded once)
# --------------------------------------------------------------------------------------------

@dataclass
class Entry:
    name: str     # label shown in the UI and used by API clients
    source: str   # what vqexplore.load receives
    hub: bool = False  # a Hub repo id: never looked up as a local path


def demo_checkpoints(folder: str | os.PathLike | None = None, hub_repos: str | None = None) -> list[Entry]:
    """The demo set: checkpoint (or run) folders directly inside ``folder`` (default
    ``$VQEXPLORE_CHECKPOINTS`` or ``<repo>/checkpoints``), then the Hub repo ids of
    ``hub_repos`` (default ``$VQEXPLORE_HUB_REPOS``, comma-separated)."""
    folder = Path(folder or os.environ.get("VQEXPLORE_CHECKPOINTS") or DEFAULT_CHECKPOINTS).expanduser()
    hub_repos = os.environ.get("VQEXPLORE_HUB_REPOS", "") if hub_repos is None else hub_repos
    entries: list[Entry] = []
    if is_checkpoint_dir(folder):  # the variable may name one checkpoint folder
        entries.append(Entry(folder.name, str(folder)))
    elif folder.is_dir():
        entries += [Entry(name, str(path)) for name, path, _ in checkpoints_in(folder)]
    elif os.environ.get("VQEXPLORE_CHECKPOINTS"):
        log.warning("VQEXPLORE_CHECKPOINTS=%s is not a folder; no local demo checkpoints", folder)
    for repo in (r.strip() for r in hub_repos.split(",")):
        if repo:
            entries.append(Entry(repo, repo, hub=True))
    return entries


class ModelCache:
    """Models by source, loaded once. Demo models stay; typed Hub models are kept LRU."""

    def __init__(self, pinned: set[str], max_extra: int = EXTRA_MODEL_CACHE):
        self.pinned = set(pinned)
        self.max_extra = max_extra
        self._models: OrderedDict[str, torch.nn.Module] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, source: str, *, hub: bool = False) -> torch.nn.Module:
        """The model of ``source``; ``hub=True``: ``source`` is a Hub repo id only (a typed id
        must never load a folder of the server, e.g. ``runs/base``)."""
        key = (source, hub)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            per_source = self._loading.setdefault(key, threading.Lock())
        with per_source:  # one load per source even when many requests ask at once
            with self._lock:
                if key in self._models:
                    return self._models[key]
            model = vqexplore.load(source, device="cpu", local_roots=() if hub else None)
            model.requires_grad_(False)
            with self._lock:
                self._models[key] = model
                extra = [k for k in self._models if k[0] not in self.pinned]
                for old in extra[:max(0, len(extra) - self.max_extra)]:
                    del self._models[old]
                self._loading.pop(key, None)
            return model

    def __contains__(self, source: str) -> bool:
        return any(k[0] == source for k in self._models)


# --------------------------------------------------------------------------------------------
# LPIPS: computed when its pretrained weights exist locally, otherwise said once
# --------------------------------------------------------------------------------------------

class LpipsProvider:
    """LPIPS when its pretrained weights are on disk, else the reason it is not shown.

    Probing imports lpips, torchvision, torchmetrics and torch-fidelity (tens of seconds on a
    busy 2-core machine), so it runs in a background thread from start-up: the page is served
    meanwhile, and only a request that arrives before the probe ends waits for it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._module = None
        self.reason: str | None = None
        self._probe = threading.Thread(target=self._check, name="lpips-probe", daemon=True)
        self._probe.start()

    def _check(self) -> None:
        try:
            from vqexplore.metrics import weights_status

            self.reason = weights_status().get("lpips")
        except Exception as e:  # the metric is optional: never stop the demo for it
            self.reason = f"LPIPS is unavailable ({type(e).__name__}: {e})."

    def get(self):
        self._probe.join()
        if self.reason is not None:
            return None
        with self._lock:
            if self._module is None and self.reason is None:
                try:
                    from vqexplore.metrics import LPIPS

                    self._module = LPIPS()
                except Exception as e:
                    self.reason = f"LPIPS is unavailable ({e})"
        return self._module
