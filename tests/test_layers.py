"""One source of truth between the layers: checks over the whole tree (no model, no server).

- The run folder's file names are spelled only in ``vqexplore/runlayout.py``.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("trainer", "vqexplore", "app", "bench", "scripts")
LAYOUT_OWNER = ROOT / "vqexplore" / "runlayout.py"

# File names of a run folder / of the trainer's files in a checkpoint folder. config.json and
# model.safetensors are the checkpoint format, owned by vqexplore/hub.py, and not listed here.
RUN_FILES = {"config.yaml", "metrics.jsonl", "training.json", "trainer_state.json", "metrics.json"}
# Folder names that are ordinary words too ("ema" is also a --weights choice, "samples" a count):
# they count only as a path component (``x / "ema"``, "samples/...").
RUN_DIRS = {"checkpoints", "ema", "samples"}
NOT_A_RUN_FOLDER = "not a run folder"  # a line comment that exempts a path that merely shares a name


def python_files() -> list[Path]:
    return sorted(p for d in CODE_DIRS for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def spells_run_name(text: str) -> bool:
    """Whether a string literal (not prose: the name must be a whole path component) names a
    run-folder file or folder."""
    parts = text.strip("/").split("/")
    if any(p in RUN_FILES or re.match(r"step-(\d|\*|$)", p) or p.startswith("events.out.tfevents")
           for p in parts):
        return True
    return len(parts) > 1 and any(p in RUN_DIRS for p in parts[:-1])


def layout_literals(path: Path) -> list[str]:
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    docstrings = _docstring_nodes(tree)
    found = []
    for node in ast.walk(tree):
        hit = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            hit = node.value if spells_run_name(node.value) else None
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) \
                and node.right.value in RUN_DIRS:
            hit = f"/ {node.right.value!r}"
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant) \
                and str(node.values[0].value).startswith("step-"):
            hit = "f'step-...'"
        if hit and NOT_A_RUN_FOLDER not in lines[node.lineno - 1]:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {hit!r}")
    return found


def test_the_scanner_sees_each_kind_of_spelling(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('"""Writes config.yaml (prose is fine)."""\n'
                   'a = run / "config.yaml"\nb = run / "checkpoints" / x\nc = f"step-{s:08d}"\n'
                   'd = "runs/x/metrics.jsonl"\ne = ("live", "ema")\nf = "samples/grid.png"\n'
                   'g = "the metrics.json of a checkpoint"\n')
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        hits = layout_literals(bad)
    finally:
        ROOT = old
    assert sorted({int(h.split(":")[1]) for h in hits}) == [2, 3, 4, 5, 7], hits


def test_run_folder_names_are_spelled_only_by_the_layout_owner():
    hits = [hit for path in python_files() if path != LAYOUT_OWNER for hit in layout_literals(path)]
    assert not hits, ("run-folder names spelled outside vqexplore/runlayout.py (use RunLayout / its constants): "
                      + "; ".join(hits))
