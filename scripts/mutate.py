"""Mutation check of the code that guards correctness and safety (slow; not part of CI).

    python scripts/mutate.py                        # every target (~20-30 min on 2 busy cores)
    python scripts/mutate.py confine restart        # some targets
    python scripts/mutate.py --list                 # the mutants, without running anything

For each target (a few functions of one module, see TARGETS) every mutant changes one thing in
those functions: a comparison (< <= > >= == != in is, flipped), and/or, a removed ``not``, an
arithmetic operator, a dropped operand of ``+``, a constant (+1, True/False, an empty string),
an ``if`` negated, a statement replaced by ``pass``. The mutated module is written into a copy of
the checkout (the checkout itself is never touched) and only the target's tests run, stopping at
the first failure. A mutant that no test notices *survives* and is printed with its line; a
survivor listed in EQUIVALENT (same behaviour, explained there) is reported apart. The exit code
is the number of non-equivalent survivors (0: every mutant killed or known equivalent).
"""
from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Target:
    module: str                  # file, relative to the checkout
    functions: list[str]         # qualified names: "inside", "VectorQuantizer.forward"
    tests: list[str]             # pytest arguments (files, node ids, -k expressions)
    timeout: float = 300         # seconds per mutant; a timeout counts as killed (the tests hang)
    note: str = ""


TARGETS: dict[str, Target] = {
    "confine": Target("vqexplore/hub.py", ["inside"], ["tests/test_hub.py", "-k", "inside"], timeout=300,
                      note="the check behind the demo's upload folder and the dashboard's --confine"),
    "restart": Target("vqexplore/quantizers/vq.py",
                      ["VectorQuantizer._restart_dead_codes"],
                      ["tests/test_remedies.py", "-k", "restart or usage_ema or revives or ddp"], timeout=900,
                      note="dead-code restart"),
    "vq-forward": Target("vqexplore/quantizers/vq.py", ["VectorQuantizer.forward"],
                         ["tests/test_quantizers.py", "tests/test_remedies.py", "-k",
                          "(vq or straight_through or ema_update or entropy or usage_ema or restart or revives "
                          "or kmeans_init or rotation) and not ddp and not simvq"], timeout=600,
                         note="VQ's losses, straight-through, usage EMA update, remedies' order"),
    "search": Target("vqexplore/quantizers/search.py", ["nearest_code", "chunk_rows"],
                     ["tests/test_quantizers.py", "-k", "brute_force or chunk_boundaries or bf16_autocast"],
                     timeout=600, note="the nearest-code search"),
    "checkpoint-checks": Target("vqexplore/hub.py", ["check_safetensors"],
                                ["tests/test_models.py", "-k",
                                 "truncated or garbage or pickle or missing or extra or roundtrip"],
                                timeout=600, note="safetensors header and size checks"),
    "resume": Target("trainer/checkpoint.py", ["is_resumable", "latest_resumable"],
                     ["tests/test_trainer_resume.py"], timeout=900,
                     note="which checkpoint a resume continues from (a unit test first, then kill-and-resume)"),
}

# Survivors that behave the same as the original (key: "target:function:line:what", where line
# counts from the function's `def`): checked by hand, with the reason.
_SEED = ("another seed for the restart's random draw: still a pure function of the restart counter, so just as "
         "reproducible on resume and identical on every rank; which random tokens are drawn is no behaviour")
EQUIVALENT: dict[str, str] = {
    "restart:VectorQuantizer._restart_dead_codes:6:Return -> pass":
        "without dead codes the rest restarts nothing (n = 0, empty index): the early return only saves work",
    "restart:VectorQuantizer._restart_dead_codes:7:a + b -> a": _SEED,
    "restart:VectorQuantizer._restart_dead_codes:7:1 -> 2": _SEED,
}


# -- mutants ----------------------------------------------------------------------------------

_COMPARE_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                 ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
_BINOP_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
               ast.Mod: ast.Mult, ast.Pow: ast.Mult}


@dataclass
class Mutant:
    target: str
    function: str
    index: int            # position among the module's candidate edits
    line: int             # absolute line in the original file
    rel_line: int         # line counted from the function's def
    what: str
    source: str = field(default="")  # the mutated statement

    @property
    def key(self) -> str:
        return f"{self.target}:{self.function}:{self.rel_line}:{self.what}"


def _functions(tree: ast.Module, names: list[str]) -> dict[str, ast.AST]:
    found = {}

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if name in names:
                    found[name] = child
                walk(child, name + ".")

    walk(tree, "")
    missing = set(names) - set(found)
    if missing:
        raise SystemExit(f"error: {', '.join(sorted(missing))} not found in the module")
    return found


def _edits(node: ast.AST) -> list[tuple[str, object]]:
    """The one-step changes of ``node`` itself: (description, how) pairs."""
    out = []
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _COMPARE_SWAP:
                out.append((f"{type(op).__name__} -> {_COMPARE_SWAP[type(op)].__name__}", ("cmp", i)))
    elif isinstance(node, ast.BoolOp):
        out.append((f"{type(node.op).__name__} -> {'Or' if isinstance(node.op, ast.And) else 'And'}", ("bool",)))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        out.append(("drop not", ("not",)))
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAP:
        out.append((f"{type(node.op).__name__} -> {_BINOP_SWAP[type(node.op)].__name__}", ("binop",)))
        if isinstance(node.op, ast.Add):
            out.append(("a + b -> a", ("left",)))
    elif isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool):
            out.append((f"{v} -> {not v}", ("const", not v)))
        elif isinstance(v, int):
            out.append((f"{v} -> {v + 1}", ("const", v + 1)))
        elif isinstance(v, float):
            out.append((f"{v} -> {v * 2 + 1}", ("const", v * 2 + 1)))
        elif isinstance(v, str) and v and not _is_docstring(node):
            out.append((f"{v[:20]!r} -> ''", ("const", "")))
    elif isinstance(node, (ast.If, ast.While)):
        out.append(("negate condition", ("negate",)))
    if isinstance(node, (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Raise, ast.Return,
                         ast.Continue, ast.Break)) and not _is_docstring(node):
        out.append((f"{type(node).__name__} -> pass", ("pass",)))
    return out


_DOCSTRINGS: set[int] = set()


def _is_docstring(node: ast.AST) -> bool:
    return id(node) in _DOCSTRINGS


def _mark_docstrings(tree: ast.AST) -> None:
    _DOCSTRINGS.clear()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                _DOCSTRINGS.update((id(first), id(first.value)))
        if isinstance(node, ast.JoinedStr):  # f-strings are message text, not behaviour
            _DOCSTRINGS.update(id(v) for v in ast.walk(node))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id.endswith(("Error", "Exception")):  # an exception's message
            _DOCSTRINGS.update(id(a) for a in node.args if isinstance(a, ast.Constant))


def _candidates(tree: ast.Module, target: Target) -> list[tuple[str, ast.AST, int, str, object]]:
    _mark_docstrings(tree)
    out = []
    for name, fn in _functions(tree, target.functions).items():
        body = fn.body[1:] if fn.body and _is_docstring(fn.body[0]) else fn.body
        for stmt in body:
            for node in ast.walk(stmt):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)) \
                        or _is_docstring(node):
                    continue
                for what, how in _edits(node):
                    out.append((name, node, node.lineno - fn.lineno, what, how))
    return out


def _apply(node: ast.AST, how: tuple) -> ast.AST | None:
    """Change ``node`` in place, or return its replacement."""
    kind = how[0]
    if kind == "cmp":
        node.ops[how[1]] = _COMPARE_SWAP[type(node.ops[how[1]])]()
    elif kind == "bool":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif kind == "not":
        return node.operand
    elif kind == "binop":
        node.op = _BINOP_SWAP[type(node.op)]()
    elif kind == "left":
        return node.left
    elif kind == "const":
        node.value = how[1]
    elif kind == "negate":
        node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
    elif kind == "pass":
        return ast.Pass()
    return None


class _Replace(ast.NodeTransformer):
    def __init__(self, old: ast.AST, new: ast.AST):
        self.old, self.new = old, new

    def generic_visit(self, node):
        super().generic_visit(node)
        return node

    def visit(self, node):
        if node is self.old:
            return ast.copy_location(self.new, node)
        return super().visit(node)


def mutants(name: str, target: Target) -> tuple[str, list[tuple[Mutant, str]]]:
    """(the module as ast.unparse writes it, [(mutant, mutated module source)])."""
    text = (ROOT / target.module).read_text()
    baseline = ast.unparse(ast.parse(text))
    out = []
    count = len(_candidates(ast.parse(text), target))
    for i in range(count):
        tree = ast.parse(text)
        fn_name, node, rel, what, how = _candidates(tree, target)[i]
        stmt_line = node.lineno
        new = _apply(node, how)
        if new is not None:
            _Replace(node, new).visit(tree)
        ast.fix_missing_locations(tree)
        source = ast.unparse(tree)
        if source == baseline:
            continue
        mutated_line = _statement_at(tree, stmt_line)
        out.append((Mutant(name, fn_name, i, stmt_line, rel, what, mutated_line), source))
    return baseline, out


def _statement_at(tree: ast.AST, line: int) -> str:
    best = None
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and getattr(node, "lineno", None) == line:
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.If, ast.For, ast.While, ast.With, ast.Try)):
                best = node
                break
            best = best or node
    if best is None:
        return ""
    text = ast.unparse(best).splitlines()[0]
    return text[:110]


# -- running ----------------------------------------------------------------------------------

def copy_checkout(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


# Imported once here, before the first fork, so that each mutant's pytest starts in a fraction of
# a second instead of importing torch again (tens of seconds on a busy 2-core machine). Nothing of
# this project is imported here: every child imports the mutated checkout afresh.
PREIMPORT = ("torch", "numpy", "scipy.optimize", "PIL.Image", "safetensors.torch", "yaml", "pytest",
             "huggingface_hub", "torchvision", "vector_quantize_pytorch", "skimage.metrics")


def preimport() -> None:
    import importlib
    from importlib.metadata import entry_points

    for name in PREIMPORT:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    for ep in entry_points(group="pytest11"):  # pytest's plugins: loaded at every start otherwise
        try:
            ep.load()
        except Exception:
            pass


def start_tests(copy_root: Path, target: Target) -> int:
    """Fork a child that runs the target's tests in ``copy_root`` (exit code 0: they passed)."""
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            os.chdir(copy_root)
            os.environ["PYTHONPATH"] = str(copy_root)
            os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
            sys.path.insert(0, str(copy_root))
            sys.dont_write_bytecode = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            import pytest

            code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *target.tests]))
        finally:
            os._exit(code)
    return pid


def wait_any(running: dict, timeout_of) -> tuple[object, bool, float]:
    """Wait until one of ``running`` ({pid: (job, started)}) ends or runs out of time; returns
    (its job, whether its tests passed, seconds). A timeout counts as failed tests."""
    while True:
        for pid, (job, started) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            seconds = time.monotonic() - started
            if done:
                del running[pid]
                return job, os.waitstatus_to_exitcode(status) == 0, seconds
            if seconds > timeout_of(job):
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                del running[pid]
                return job, False, seconds
        time.sleep(0.05)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("targets", nargs="*", help=f"some of: {', '.join(TARGETS)} (default: all)")
    p.add_argument("--list", action="store_true", help="print the mutants and stop")
    p.add_argument("--jobs", type=int, default=2, help="mutants tested at once, each in its own copy (default 2)")
    args = p.parse_args(argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        p.error(f"unknown target {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    names = args.targets or list(TARGETS)
    plan = {name: mutants(name, TARGETS[name]) for name in names}
    for name in names:
        target = TARGETS[name]
        print(f"## {name}: {target.module} {', '.join(target.functions)} ({len(plan[name][1])} mutants; "
              f"{target.note})", flush=True)
        if args.list:
            for m, _ in plan[name][1]:
                print(f"  {target.module}:{m.line} {m.what}: {m.source}")
    total = sum(len(muts) for _, muts in plan.values())
    if args.list:
        print(f"\n{total} mutants")
        return 0
    started = time.monotonic()
    survivors, equivalent = [], []
    with tempfile.TemporaryDirectory(prefix="vqexplore-mutate-") as tmp:
        slots = [Path(tmp) / f"copy{i}" for i in range(max(1, args.jobs))]
        for slot in slots:
            copy_checkout(slot)
        originals = {TARGETS[n].module: (ROOT / TARGETS[n].module).read_text() for n in names}
        preimport()

        def prepare(slot: Path, module: str, source: str) -> None:
            for rel, text in originals.items():  # one changed module per copy at a time
                (slot / rel).write_text(source if rel == module else text)

        # The tests must pass on each module as ast.unparse writes it (what every mutant is made from).
        running: dict = {}
        for i, name in enumerate(names):
            slot = slots[i % len(slots)]
            if len(running) == len(slots):
                (name_done, slot_done), ok, seconds = wait_any(running, lambda job: TARGETS[job[0]].timeout)
                if not ok:
                    print(f"the tests of {name_done} fail on the unmutated module ({seconds:.0f} s): fix that first")
                    return 1
                print(f"unmutated {name_done}: tests pass in {seconds:.0f} s", flush=True)
                slot = slot_done
            prepare(slot, TARGETS[name].module, plan[name][0])
            running[start_tests(slot, TARGETS[name])] = ((name, slot), time.monotonic())
        while running:
            (name_done, slot_done), ok, seconds = wait_any(running, lambda job: TARGETS[job[0]].timeout)
            if not ok:
                print(f"the tests of {name_done} fail on the unmutated module ({seconds:.0f} s): fix that first")
                return 1
            print(f"unmutated {name_done}: tests pass in {seconds:.0f} s", flush=True)

        queue = [(name, m, source) for name in names for m, source in plan[name][1]]
        free = list(slots)
        while queue or running:
            while queue and free:
                name, m, source = queue.pop(0)
                slot = free.pop(0)
                prepare(slot, TARGETS[name].module, source)
                running[start_tests(slot, TARGETS[name])] = ((name, m, slot), time.monotonic())
            (name, m, slot), ok, seconds = wait_any(running, lambda job: TARGETS[job[0]].timeout)
            free.append(slot)
            if ok:
                (equivalent if m.key in EQUIVALENT else survivors).append(m)
            status = ("SURVIVED (equivalent)" if m.key in EQUIVALENT else "SURVIVED") if ok else "killed"
            print(f"  {status:22s} {seconds:5.0f} s  {name:18s} {TARGETS[name].module}:{m.line} {m.what}: "
                  f"{m.source}", flush=True)
    minutes = (time.monotonic() - started) / 60
    print(f"\n{total} mutants in {minutes:.1f} min ({args.jobs} at a time): "
          f"{total - len(survivors) - len(equivalent)} killed, {len(equivalent)} survived but equivalent, "
          f"{len(survivors)} survived")
    for m in equivalent:
        print(f"  equivalent  {m.key}  ({EQUIVALENT[m.key]})")
    for m in survivors:
        print(f"  SURVIVOR    {m.key}  {TARGETS[m.target].module}:{m.line}: {m.source}")
    return len(survivors)


if __name__ == "__main__":
    sys.exit(main())
