"""Shared helpers of the trainer tests: a tiny config and subprocess runners."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

# A model and data small enough for a step in a few milliseconds on one core.
TINY = {
    "model": {"quantizer": "vq", "codebook_size": 32, "code_dim": 8, "hidden_dim": 16, "n_resblocks": 1},
    "data": {"train": "builtin", "val": "builtin", "size": 16},
    "train": {"batch_size": 8, "lr": 1e-3, "steps": 12, "seed": 0, "threads": 1, "log_every": 2,
              "val_every": 6, "val_images": 16, "grid_images": 4, "ckpt_every": 3, "keep_last": 2},
    "eval": {"batch_size": 64},
}


def write_config(path: Path, name: str, out_dir: Path, **sections) -> Path:
    cfg = {"name": name, "out_dir": str(out_dir)}
    for key, value in TINY.items():
        cfg[key] = {**value, **sections.get(key, {})}
    cfg.update({key: value for key, value in sections.items() if key not in TINY})  # e.g. loss=
    path.write_text(yaml.safe_dump(cfg))
    return path


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def run_trainer(*args: str, timeout: float = 120, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", *args], cwd=ROOT, env={**env(), **(extra_env or {})},
                          capture_output=True, text=True, timeout=timeout)
