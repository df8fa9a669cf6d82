"""One source of truth between the layers: checks over the whole tree (no model, no server).

- The run folder's file names are spelled only in ``vqexplore/runlayout.py``.
- ``python -m trainer --help`` names every quantizer the library has.
- No module of the library names a config file or a row of ``configs/``, or reads markdown: what the
  library needs from the trainer (the sweep's rows, which rows tried which remedy) comes in as data.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("trainer", "vqexplore", "app", "bench", "scripts")
LAYOUT_OWNER = ROOT / "vqexplore" / "runlayout.py"

# File names of a run folder / of the trainer's files in a checkpoint folder. config.json and
# model.safetensors are the checkpoint format, owned by vqexplore/hub.py, and not listed here.
RUN_FILES = {"config.yaml", "metrics.jsonl", "training.json", "trainer_state.json", "metrics.json", "projection.npz",
             "evaluation.npz"}
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


def test_trainer_help_names_every_quantizer_the_library_has():
    from vqexplore.describe import QUANTIZER_NAMES
    from vqexplore.models import QUANTIZERS

    out = subprocess.run([sys.executable, "-m", "trainer", "--help"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120).stdout
    first = " ".join(out.split("commands:")[0].split())
    missing = [q for q in QUANTIZERS if QUANTIZER_NAMES.get(q, q) not in first]
    assert not missing, f"`python -m trainer --help` does not name {missing}: {first[-200:]}"


def library_config_names(path: Path, rows: set[str]) -> list[str]:
    """String literals (not docstrings) of a library module that name configs/, a config row or a
    markdown file."""
    tree = ast.parse(path.read_text())
    docstrings = _docstring_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value
            named = set(re.findall(r"[\w.-]+", text)) & rows
            if "configs/" in text or re.search(r"\.(md|markdown)\b", text) or named:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text[:60]!r}")
    return found


def test_the_library_names_no_config_row_and_reads_no_markdown():
    # every row of configs/ (default.yaml's stem is an ordinary word: rows with a dash only)
    rows = {p.stem for p in (ROOT / "configs").rglob("*.yaml") if "-" in p.stem}
    assert len(rows) > 20
    hits = [h for p in sorted((ROOT / "vqexplore").rglob("*.py")) for h in library_config_names(p, rows)]
    assert not hits, "the library names trainer files (pass them in as data instead): " + "; ".join(hits)


def readme_pages() -> list[str]:
    """The numbered page list of the README's dashboard section ("N. **Title**: ...")."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("Pages (listed once in `app/pages.py`"):]
    section = section[:section.index("\n\n", section.index("\n1. "))+1]
    return re.findall(r"^\d+\. \*\*([^*]+)\*\*", section, flags=re.M)


def test_the_page_list_is_one_list():
    """The README's list, the navigation, the dashboard tests and the dashboard benchmark all read
    app.pages.PAGES; each page module has a render() function."""
    import importlib

    from app.pages import PAGES
    from helpers.dashboard import PAGES as TESTED

    titles = [p.title for p in PAGES]
    assert readme_pages() == titles, f"README lists {readme_pages()}, the navigation {titles}"
    assert list(TESTED) == [p.key for p in PAGES]
    views = {v.stem for v in (ROOT / "app" / "views").glob("*.py")} - {"__init__"}
    assert views == {p.key for p in PAGES}, "a page module that is not in app.pages.PAGES, or the reverse"
    assert all(callable(importlib.import_module(f"app.views.{p.key}").render) for p in PAGES)
    dashboard = (ROOT / "app" / "dashboard.py").read_text()
    assert "st_page(p) for p in PAGES" in dashboard and '"views/' not in dashboard
    bench = (ROOT / "bench" / "dashboard.py").read_text()
    assert "from app.pages import PAGES" in bench and not re.search(r'"code_embeddings", "reconstructions"', bench)


# scripts/mutate.py runs the tests of a mutated copy of the tree in a forked child, where that copy must
# shadow the installed project: the one place a sys.path edit is the point.
SYS_PATH_ALLOWED = {"scripts/mutate.py"}


def test_no_sys_path_edit_anywhere():
    hits = [f"{p.relative_to(ROOT)}" for d in (*CODE_DIRS, "tests") for p in (ROOT / d).rglob("*.py")
            if re.search(r"sys\.path\.(insert|append)|sys\.path\s*\+?=", p.read_text())
            and f"{p.relative_to(ROOT)}" not in SYS_PATH_ALLOWED]
    assert not hits, f"sys.path edited in {hits}; the project is installed (requirements.txt has `-e .`)"


def test_a_checkpoint_config_is_read_and_validated_once(tmp_path, monkeypatch):
    import vqexplore
    from vqexplore.models import VQModel

    VQModel(quantizer="vq", codebook_size=16, code_dim=4, hidden_dim=8, n_resblocks=1).save_pretrained(tmp_path / "c")
    from vqexplore import modelconfig

    reads, checks = [], []
    real_read, real_check = Path.read_text, modelconfig.check_config
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (reads.append(self.name), real_read(self, *a, **k))[1])
    monkeypatch.setattr(modelconfig, "check_config", lambda c: (checks.append(1), real_check(c))[1])
    model = vqexplore.load(tmp_path / "c")
    assert reads.count("config.json") == 1 and len(checks) == 1, (reads, checks)
    assert isinstance(model.config, dict) and model.codebook_size == 16


def test_a_run_config_validates_its_model_once(monkeypatch):
    import trainer.config
    from trainer.config import load_config
    from vqexplore import modelconfig
    from vqexplore.models import ModelConfig, VQModel

    checks = []
    real_check = modelconfig.check_config
    counting = lambda c: (checks.append(1), real_check(c))[1]  # noqa: E731
    monkeypatch.setattr(modelconfig, "check_config", counting)
    monkeypatch.setattr(trainer.config, "check_config", counting)
    cfg = load_config(None, ["model.codebook_size=16", "model.code_dim=4", "model.hidden_dim=8"])
    assert isinstance(cfg.model, ModelConfig)
    VQModel.from_config(cfg.model)
    assert len(checks) == 1


def test_tools_read_a_run_config_through_the_one_reader():
    import inspect

    from trainer.runfacts import default_image_size

    """evaluate / tokenize / projector take a run's settings from trainer.runfacts.run_config (a
    validated Config), never from raw dicts with `.get(...) or default` chains."""
    for name in ("evaluate", "tokenize", "projector"):
        text = (ROOT / "trainer" / f"{name}.py").read_text()
        assert not re.search(r'or \{\}\)\.get\(|run_cfg\.get\(', text), name
        # run_config itself, or runfacts.default_image_size, which reads the run through it
        assert "run_config(" in text or "default_image_size(" in text, name
    assert "run_config(" in inspect.getsource(default_image_size)


def test_one_browser_and_server_harness():
    """Free port, server start, health wait, chromium and "wait until rendered" live in tests/helpers only."""
    patterns = {"a free-port helper": r"def _?free_port\(",
                "a chromium launch": r"sync_playwright\(\)|chromium\.launch\(",
                "a render wait": r"def _?wait_rendered\(", "a Streamlit server start": r'"streamlit", "run"'}
    hits = [f"{p.name}: {what}" for p in sorted((ROOT / "tests").glob("test_*.py")) if p.name != "test_layers.py"
            for what, pattern in patterns.items() if re.search(pattern, p.read_text())]
    assert not hits, f"harness code outside tests/helpers: {hits}"


def test_readme_commands_match_ci_and_install_the_project():
    """The README's test command is what .ci/run runs; requirements.txt installs the project itself
    (a Space installs only that file), so the README's first command needs no separate `pip install -e .`."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = next(line for line in ci.splitlines() if "pytest" in line)
    assert test_cmd in readme and "ruff check ." in test_cmd
    assert re.search(r"^-e \.$", (ROOT / "requirements.txt").read_text(), flags=re.M)
    first = next(line for line in readme.splitlines() if "configs/cpu/default.yaml --resume" in line)
    assert "pip install -r requirements.txt" in first and "install -e" not in first
    assert "ruff==" in (ROOT / "requirements-dev.txt").read_text()


def run_fresh_python(code: str) -> None:
    """Run ``code`` in a new interpreter from the repository root (so nothing this test process imported
    counts) and fail with its stderr if it fails."""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_checking_a_run_config_imports_no_torch():
    """`python -m trainer` refuses an impossible config before `import torch` (1.5 s here): the
    config reader, the model config's checks and the memory estimate are torch-free."""
    code = ("import sys, vqexplore, trainer.cli\n"
            "from trainer.config import load_config\n"
            "load_config('configs/cpu/default.yaml', ['model.codebook_size=1024'])\n"
            "load_config('configs/cpu/vqgan-vq-l2-1024.yaml', [])\n"
            "trainer.cli._train_parser()\n"
            "heavy = sorted(m for m in ('torch', 'numpy', 'PIL', 'huggingface_hub') if m in sys.modules)\n"
            "assert not heavy, heavy")
    run_fresh_python(code)


def test_import_vqexplore_gives_its_names_and_submodules_on_first_use():
    """`import vqexplore` is lazy but complete: its public names, and its submodules as attributes
    (``vqexplore.hub``, ``vqexplore.data.decode``), as the eager package gave them; a wrong name is an
    AttributeError."""
    code = ("import sys, vqexplore, vqexplore.data as d\n"
            "assert 'torch' not in sys.modules\n"
            "assert callable(vqexplore.hub.read_config) and callable(vqexplore.load) and vqexplore.FSQ\n"
            "assert callable(d.decode.load_image) and callable(d.load_image) and d.NAMED_SOURCES\n"
            "for bad in ('nope', '_private'):\n"
            "    try:\n"
            "        getattr(vqexplore, bad)\n"
            "    except AttributeError:\n"
            "        pass\n"
            "    else:\n"
            "        raise SystemExit(bad)\n"
            "assert set(vqexplore.__all__) <= set(dir(vqexplore))")
    run_fresh_python(code)


def test_vqmodel_takes_exactly_the_arguments_modelconfig_checks():
    """VQModel's constructor and the torch-free argument list of vqexplore.modelconfig agree: names,
    defaults and annotations (a new argument added to one only fails here)."""
    import inspect

    from vqexplore import modelconfig
    from vqexplore.models import VQModel

    ours = list(inspect.signature(VQModel.__init__).parameters.values())[1:]
    theirs = list(inspect.signature(modelconfig._arguments).parameters.values())
    assert [(p.name, p.default, p.annotation) for p in ours] == [(p.name, p.default, p.annotation) for p in theirs]
