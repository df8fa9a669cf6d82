"""Every shipped config (configs/**) still amounts to the same effective config as the snapshot
taken before the configs were layered (tests/data/effective_configs.json, written by
``python scripts/effective_configs.py --write`` from the flat files)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests" / "data" / "effective_configs.json"


def _script():
    spec = importlib.util.spec_from_file_location("effective_configs", ROOT / "scripts" / "effective_configs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_shipped_config_keeps_its_effective_values():
    expected = json.loads(SNAPSHOT.read_text())
    now = _script().effective_configs()
    assert sorted(now) == sorted(expected), "configs added or removed: rewrite the snapshot on purpose"
    changed = {path: sorted(f"{section}.{key}" for section in now[path] if isinstance(now[path][section], dict)
                            for key in set(now[path][section]) | set(expected[path].get(section, {}))
                            if now[path][section].get(key) != expected[path][section].get(key))
               or [k for k in now[path] if now[path][k] != expected[path].get(k)]
               for path in now if now[path] != expected[path]}
    assert not changed, f"effective values changed: {changed}"
