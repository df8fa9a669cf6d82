"""The views a checkpoint carries for the apps, written by ``trainer export`` and ``trainer eval``:
the dashboard's default codebook projection (``vqexplore.projection.store_projection``) and the
checkpoint measured under the default evaluation protocol, usage counts included
(``vqexplore.protocol.store_evaluation``). Each file records what it was computed with and the
weights' sha256; the dashboard and the demo read them instead of computing, and ignore a stale or
unreadable one (``CheckpointFiles.projection`` / ``.evaluation`` name them)."""
from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

from vqexplore.errors import VQExploreError


def default_size(ckpt_dir: Path) -> int:
    """The default protocol's image side for a checkpoint: its training resolution (config.json
    ``resolution``, 64 when not recorded), as the dashboard's sidebar opens on it."""
    from vqexplore.hub import CONFIG_NAME, read_config

    try:
        return int(read_config(Path(ckpt_dir) / CONFIG_NAME).get("resolution") or 64)
    except (OSError, ValueError, TypeError, VQExploreError):
        return 64


def write_views(ckpt_dir: str | Path, *, model=None, quiet: bool = False) -> dict:
    """Store the default projection and the default protocol's evaluation beside ``ckpt_dir``;
    what is already stored for these weights and parameters is kept (nothing recomputed).

    model: the checkpoint's loaded model, if the caller has it (else loaded when something has to
    be computed). Returns {"projection": path, "evaluation": path, "seconds": float}. A failure
    (an unwritable folder, a model that cannot be measured) is one ``note:`` line on stderr and an
    empty dict: the checkpoint stays usable, the apps then compute the views themselves."""
    import vqexplore
    from vqexplore.projection import store_projection
    from vqexplore.protocol import Protocol, cached_evaluation, store_evaluation
    from vqexplore.runlayout import CheckpointFiles

    ckpt_dir = Path(ckpt_dir)
    # loaded at most once, and only if something has to be computed
    get_model = functools.cache(lambda: model if model is not None else vqexplore.load(ckpt_dir, device="cpu"))

    t0 = time.perf_counter()
    try:
        protocol = Protocol.default(default_size(ckpt_dir))
        store_evaluation(ckpt_dir, cached_evaluation(ckpt_dir, get_model, protocol))
        store_projection(ckpt_dir, get_model)
    except (OSError, ValueError, MemoryError, VQExploreError) as e:
        print(f"note: the dashboard's views were not stored beside {ckpt_dir} ({type(e).__name__}: "
              f"{str(e).splitlines()[0] if str(e) else 'no details'}); the apps will compute them", file=sys.stderr)
        return {}
    seconds = time.perf_counter() - t0
    files = CheckpointFiles(ckpt_dir)
    if not quiet:
        print(f"stored the dashboard's views beside the weights ({files.projection.name}, {files.evaluation.name}) "
              f"in {seconds:.1f} s", file=sys.stderr)
    return {"projection": files.projection, "evaluation": files.evaluation, "seconds": seconds}
