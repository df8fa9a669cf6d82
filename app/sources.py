"""Where the dashboard's checkpoints come from: its command line and environment (folders of demo
checkpoints and runs, hosted confinement), the checkpoints found there, and resolving a typed path
or Hub repo id to a ``vqexplore.hub.Source``."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import streamlit as st

from vqexplore.hub import WEIGHTS_NAME, Source
from vqexplore.runlayout import DEMO_CHECKPOINTS

REPO = Path(__file__).resolve().parent.parent  # the checkout: its runs/ is the default run folder


def _cli_args() -> argparse.Namespace:
    """``streamlit run app/dashboard.py -- --checkpoints DIR --runs DIR [--confine]``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--checkpoints", default=None)
    parser.add_argument("--runs", default=None)
    parser.add_argument("--confine", action="store_true")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args


def confined() -> bool:
    """Hosted mode (``--confine`` or ``VQEXPLORE_CONFINE=1``; the Docker image's default): typed
    sources are folders inside the checkpoint and run roots, or Hub repo ids; any other server
    path is refused with one message that does not say whether it exists."""
    env = os.environ.get("VQEXPLORE_CONFINE", "").strip().lower()
    return _cli_args().confine or env in ("1", "true", "yes", "on")


def local_roots() -> tuple[Path, ...] | None:
    """The folders a typed path may point into, or None (any path: a laptop)."""
    return (checkpoint_root(), runs_root()) if confined() else None


def checkpoint_root() -> Path:
    """Folder of demo checkpoints: ``--checkpoints``, ``$VQEXPLORE_CHECKPOINTS``, or ``checkpoints/``."""
    return Path(_cli_args().checkpoints or os.environ.get("VQEXPLORE_CHECKPOINTS") or DEMO_CHECKPOINTS)


def runs_root() -> Path:
    """Folder of training runs: ``--runs``, ``$VQEXPLORE_RUNS``, or ``runs/``."""
    return Path(_cli_args().runs or os.environ.get("VQEXPLORE_RUNS") or REPO / "runs")


def discover(ckpt_root: Path, run_root: Path) -> dict[str, str]:
    """label -> path of every checkpoint (or run) folder in ``ckpt_root`` and run folder in
    ``run_root``; runs are labelled ``run: <name>``."""
    from vqexplore.hub import checkpoints_in

    found = {name if kind == "checkpoint" else f"run: {name}": str(path)
             for name, path, kind in checkpoints_in(ckpt_root)}
    found.update({f"run: {name}": str(path) for name, path, kind in checkpoints_in(run_root) if kind == "run"})
    return found


def weights_stamp(path: str) -> tuple:
    """(size, mtime_ns) of the checkpoint's weights: part of every cache key."""
    try:
        s = (Path(path) / WEIGHTS_NAME).stat()
        return (s.st_size, s.st_mtime_ns)
    except OSError:
        return (0, 0)


@st.cache_data(show_spinner=False, max_entries=256)
def _resolve(text: str, stamp: float, roots: tuple[str, ...] | None) -> Source:
    """``stamp`` only keys the cache (a time bucket for local paths, 0 for Hub ids); ``roots``:
    see ``local_roots()``."""
    import vqexplore

    from vqexplore.hub import list_checkpoints

    src = vqexplore.resolve(text, local_roots=roots)
    # resolve() guesses a run for any checkpoint inside a folder named "checkpoints" (the demo
    # folders too): only keep it when that run really has step-N checkpoints.
    if src.run_dir and not list_checkpoints(src.run_dir):
        src = dataclasses.replace(src, run_dir=None)
    return src


def resolve(text: str) -> Source:
    """Resolve a path or Hub repo id (raises VQExploreError). Local runs are re-resolved every
    few seconds so a run that writes a new checkpoint moves on to it."""
    from vqexplore.hub import inside

    roots = local_roots()
    local = Path(text).expanduser().exists() and (roots is None or inside(text, roots))
    return _resolve(text, time.time() // 5 if local else 0.0,
                    None if roots is None else tuple(str(r) for r in roots))
