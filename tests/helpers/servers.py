"""Shared helpers of the tests that start servers in subprocesses (the demo, the dashboard, the image's CMD)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """Terminate a server, and kill it if it has not exited after 20 s."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_http(url: str, proc: subprocess.Popen, log_path: Path, timeout: float = 180.0) -> None:
    """Until ``url`` answers 200; fails with the server's log if it exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"server not up after {timeout:.0f} s:\n{log_path.read_text()[-4000:]}")


def start_dashboard(env: dict, log_path: Path, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """``streamlit run app/dashboard.py`` headless on a free loopback port with ``env``: (process,
    url) once ``/_stcore/health`` answers; fails with the server's log if it does not."""
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "dashboard.py"), "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/_stcore/health", proc, log_path, timeout)
    except AssertionError:
        stop(proc)
        raise
    return proc, url


def start_demo(tmp: Path, checkpoints: Path, **extra_env: str) -> tuple[subprocess.Popen, str, Path]:
    """``python app/gradio_app.py`` from the repository root (as a Space runs it), offline, on a
    free loopback port, with ``checkpoints`` as the demo set: (process, url, log) once it answers."""
    port = free_port()
    env = dict(os.environ, VQEXPLORE_CHECKPOINTS=str(checkpoints), VQEXPLORE_HUB_REPOS="",
               GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False",
               GRADIO_TEMP_DIR=str(tmp / "gradio-tmp"), HF_HUB_OFFLINE="1", MPLCONFIGDIR=str(tmp / "mpl"),
               PYTHONUNBUFFERED="1")
    env.update(extra_env)
    log_path = tmp / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app" / "gradio_app.py")], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_http(url + "config", proc, log_path)
    except BaseException:
        stop(proc)
        raise
    return proc, url, log_path
