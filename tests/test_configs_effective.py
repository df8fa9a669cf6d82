"""Every shipped config (configs/**) still amounts to the same effective config as the snapshot
taken before the configs were layered (tests/data/effective_configs.json, written by
``python scripts/effective_configs.py --write`` from the flat files)."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests" / "data" / "effective_configs.json"


def _script():
    spec = importlib.util.spec_from_file_location("effective_configs", ROOT / "scripts" / "effective_configs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Restart thresholds now given as {uniform_share: 0.25} (worked out from the row's own batch and
# token grid); the CPU rows' hand-computed value 0.008 was that quarter rounded (exactly 0.0078125).
RELATIVE_TOLERANCE = {"model.dead_code_threshold": 0.03}


def _differences(now: dict, old: dict, prefix: str = "") -> list[str]:
    out = []
    for name in sorted(set(now) | set(old)):
        if name not in old:  # a setting added to the trainer since the snapshot (its default): not a change
            continue
        a, b, key = now.get(name), old.get(name), prefix + name
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, key + ".")
        elif a != b:
            tol = RELATIVE_TOLERANCE.get(key)
            numbers = isinstance(a, (int, float)) and isinstance(b, (int, float))
            if not (tol and numbers and math.isclose(a, b, rel_tol=tol)):
                out.append(f"{key}: {b!r} -> {a!r}")
    return out


def test_every_shipped_config_keeps_its_effective_values():
    expected = json.loads(SNAPSHOT.read_text())
    now = _script().effective_configs()
    assert sorted(now) == sorted(expected), "configs added or removed: rewrite the snapshot on purpose"
    changed = {path: _differences(now[path], expected[path]) for path in now}
    changed = {path: diff for path, diff in changed.items() if diff}
    assert not changed, f"effective values changed: {changed}"


# Rows other branches added after the layering, written flat (not yet on their family's base file).
LATER_ROWS = {"vqgan-vq-l2-1024.yaml", "simvq-4096-gan.yaml"}


def test_the_shipped_configs_are_layered():
    """Rows state what differs from their family's base file: far fewer lines than the flat files
    (905 lines in 71 files before)."""
    files = sorted((ROOT / "configs").rglob("*.yaml"))
    lines = sum(len(p.read_text().splitlines()) for p in files)
    assert lines <= 0.6 * 905, lines
    layered = {p.stem for p in (ROOT / "configs" / "base").glob("*.yaml")}
    rows = [p for p in files if p.parent.name in layered and not p.name.startswith("default")
            and p.name not in LATER_ROWS]
    assert all("base: ../base/" in p.read_text() for p in rows)


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_row_states_only_what_differs_from_its_base(tmp_path):
    from trainer.config import load_config

    _write(tmp_path, "base/common.yaml", "out_dir: runs\nmodel: {hidden_dim: 8, n_resblocks: 1}\n"
                                         "train: {batch_size: 4, lr: 0.01, steps: 5}\n")
    _write(tmp_path, "base/vq.yaml", "base: common.yaml\nmodel: {quantizer: vq, codebook_size: 16, code_dim: 4}\n")
    row = _write(tmp_path, "rows/a.yaml", "base: ../base/vq.yaml\ntrain: {steps: 7}\nmodel: {code_dim: 8}\n")
    cfg = load_config(row)
    assert (cfg.name, cfg.model.codebook_size, cfg.model.code_dim, cfg.model.hidden_dim) == ("a", 16, 8, 8)
    assert (cfg.train.batch_size, cfg.train.lr, cfg.train.steps) == (4, 0.01, 7)  # section keys merge one by one


def test_base_file_errors_are_one_line(tmp_path):
    from trainer.config import load_config
    from vqexplore.errors import ConfigError

    _write(tmp_path, "a.yaml", "base: b.yaml\n")
    _write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"base: files form a cycle \(a.yaml -> b.yaml -> a.yaml\)") as e:
        load_config(tmp_path / "a.yaml")
    assert "\n" not in str(e.value)
    _write(tmp_path, "self.yaml", "base: ./self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "self.yaml")
    _write(tmp_path, "lost.yaml", "base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"base: .*nowhere.yaml does not exist; give a path relative to"):
        load_config(tmp_path / "lost.yaml")
    _write(tmp_path, "odd.yaml", "base: [a.yaml]\n")
    with pytest.raises(ConfigError, match="base: must be the path of a YAML file"):
        load_config(tmp_path / "odd.yaml")
    proc = subprocess.run([sys.executable, "-m", "trainer", "--cfg", str(tmp_path / "a.yaml")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "cycle" in proc.stderr


def test_a_relative_restart_threshold_follows_the_batch_and_the_token_grid(tmp_path):
    from trainer.config import load_config
    from vqexplore.errors import ConfigError

    row = _write(tmp_path, "r.yaml", "model: {quantizer: vq, codebook_size: 64, code_dim: 4, kmeans_init: true,\n"
                                     "  dead_code_threshold: {uniform_share: 0.25}}\n"
                                     "data: {size: 32}\ntrain: {batch_size: 8}\n")
    # 8 images x (32/4)^2 tokens = 512 tokens per step, / 64 codes = 8 per code; a quarter: 2
    assert load_config(row).model.dead_code_threshold == 2.0
    assert load_config(row, ["train.batch_size=32"]).model.dead_code_threshold == 8.0
    assert load_config(row, ["data.size=16"]).model.dead_code_threshold == 0.5
    assert load_config(row, ["model.dead_code_threshold=0.3"]).model.dead_code_threshold == 0.3  # absolute wins
    for bad in ("{uniform_share: -1}", "{uniform_share: '0.25'}", "{share: 0.25}", "{uniform_share: .nan}"):
        with pytest.raises(ConfigError, match=r"^model.dead_code_threshold: a number of tokens per step"):
            load_config(row, [f"model.dead_code_threshold={bad}"])
    with pytest.raises(ConfigError, match="applies to quantizer='vq' only"):
        load_config(row, ["model.quantizer=simvq"])
    # A VQGAN's token grid is its own: f16 by default (ch_mult of 5 levels), f4 with [1, 2, 2].
    gan = _write(tmp_path, "g.yaml", "model: {arch: vqgan, ch: 8, norm_groups: 8, z_channels: 8, quantizer: vq,\n"
                                     "  codebook_size: 64, code_dim: 4, dead_code_threshold: {uniform_share: 0.25}}\n"
                                     "data: {size: 64}\ntrain: {batch_size: 8}\n")
    assert load_config(gan).model.dead_code_threshold == 8 * (64 // 16) ** 2 / 64 / 4
    assert load_config(gan, ["model.ch_mult=[1,2,2]"]).model.dead_code_threshold == 8 * (64 // 4) ** 2 / 64 / 4
