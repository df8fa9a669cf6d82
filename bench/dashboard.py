"""Dashboard speed: first render of the Code embeddings page for a 16,384-code checkpoint in a
freshly started server (UMAP included), and re-renders of every page from cache.

    python bench/dashboard.py                      # a 16,384-code demo checkpoint if there is one
    python bench/dashboard.py --ckpt checkpoints/vq-16384
    python bench/dashboard.py --cold-numba         # also count numba's one-time compilation
    python bench/dashboard.py --only-views --rounds 3   # only the stored-views rows, before / after

Targets (2 CPU cores): first render <= 20 s, any re-render from cache <= 2 s; the first render of a
checkpoint that went through ``python -m trainer export`` (its views stored beside the weights)
<= 4 s.

Stored views, before and after in one run: the checkpoint is exported twice with the real command,
``python -m trainer export --no-views`` (before: the page computes the projection and the usage counts)
and ``python -m trainer export`` (after: it reads them), and a fresh server with an empty cache draws
Code embeddings of each, alternating, ``--rounds`` times.

A render is timed in a real browser (Debian chromium through playwright) from navigation until
the page's script has finished (Streamlit's "running" indicator is gone) and its plotly charts
are drawn. Every server gets an empty projection cache (VQEXPLORE_CACHE_DIR in a temp folder),
so "first render" includes UMAP. numba keeps compiled kernels on disk per installation; by
default that one-time compilation is excluded (run once before), --cold-numba includes it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.pages import PAGES as REGISTRY
from vqexplore.hub import CONFIG_NAME
from vqexplore.runlayout import DEMO_CHECKPOINTS

REPO = Path(__file__).resolve().parent.parent

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PAGES = [p.key for p in REGISTRY]  # every page, in the navigation's order (app/pages.py)
NAV_LABELS = {p.key: p.title for p in REGISTRY}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_big_checkpoint(min_codes: int = 16384) -> Path | None:
    for cfg in sorted(DEMO_CHECKPOINTS.glob(f"*/{CONFIG_NAME}")):
        try:
            if json.loads(cfg.read_text()).get("codebook_size", 0) >= min_codes:
                return cfg.parent
        except (OSError, ValueError):
            continue
    return None


def make_checkpoint(folder: Path) -> Path:
    """A 16,384 x 64 VQ checkpoint (SimpleCNN hidden 64), untrained: the same UMAP work."""
    import torch

    from vqexplore import VQModel

    torch.manual_seed(0)
    path = folder / "vq-16384-untrained"
    VQModel(quantizer="vq", codebook_size=16384, code_dim=64, hidden_dim=64).save_pretrained(path)
    return path


class Server:
    """``streamlit run app/dashboard.py`` on a free port, with its own checkpoint root and cache."""

    def __init__(self, ckpt_root: Path, cache: Path, env_extra: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "VQEXPLORE_CACHE_DIR": str(cache), "VQEXPLORE_CHECKPOINTS": str(ckpt_root),
               "VQEXPLORE_RUNS": str(ckpt_root / "_no_runs"), **(env_extra or {})}
        self.log = tempfile.TemporaryFile()
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "dashboard.py"),
             "--server.headless", "true", "--server.port", str(self.port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.ready_s = self._wait_healthy()

    def _wait_healthy(self, timeout: float = 120) -> float:
        import urllib.request

        while time.perf_counter() - self.t0 < timeout:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.t0
            except OSError:
                time.sleep(0.1)
        self.log.seek(0)
        raise RuntimeError(f"streamlit did not start: {self.log.read().decode(errors='replace')[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wait_rendered(page, timeout_s: float = 300) -> None:
    """Until the script run is over (no status widget for a moment) and charts are drawn."""
    deadline = time.perf_counter() + timeout_s
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_s * 1000)
    quiet_since = None
    while time.perf_counter() < deadline:
        running = page.query_selector('[data-testid="stStatusWidget"]') is not None
        skeleton = page.query_selector('[data-testid="stSkeleton"]') is not None
        charts = page.query_selector_all('[data-testid="stPlotlyChart"]')
        drawn = all(c.query_selector(".main-svg") is not None for c in charts)
        if not running and not skeleton and drawn and page.query_selector("h1") is not None:
            quiet_since = quiet_since or time.perf_counter()
            if time.perf_counter() - quiet_since >= 0.3:
                return
        else:
            quiet_since = None
        time.sleep(0.05)
    raise TimeoutError("page did not finish rendering")


def server_seconds(page) -> float | None:
    """The page's own "Page computed in X s on the server" footer."""
    import re

    m = re.search(r"Page computed in ([0-9.]+) s", page.inner_text("body"))
    return float(m.group(1)) if m else None


def timed_visit(page, url: str) -> tuple[float, float | None]:
    t0 = time.perf_counter()
    page.goto(url, wait_until="domcontentloaded")
    wait_rendered(page)
    return time.perf_counter() - t0 - 0.3, server_seconds(page)  # minus the quiet period that confirms the end




def timed_click(page, label: str) -> float:
    t0 = time.perf_counter()
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=label).click()
    page.wait_for_selector(f"h1:has-text('{label.split()[0]}')")
    wait_rendered(page)
    return time.perf_counter() - t0 - 0.3, server_seconds(page)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, default=None, help="a checkpoint with >= 16384 codes")
    parser.add_argument("--cold-numba", action="store_true", help="empty numba cache too (one-time compile)")
    parser.add_argument("--screenshots", type=Path, default=None, help="save a screenshot per page here")
    parser.add_argument("--only-compare", action="store_true",
                        help="only the Compare rows (six demo checkpoints: first render, size switch)")
    parser.add_argument("--only-views", action="store_true",
                        help="only the stored-views rows (export --no-views vs export, fresh servers)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating before/after rounds of the views rows")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from vqexplore.hub import read_config

    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) or set CHROMIUM=")
    work = Path(tempfile.mkdtemp(prefix="vqexplore-bench-"))
    try:
        ckpt = args.ckpt or find_big_checkpoint() or make_checkpoint(work / "made")
        root = work / "root"
        root.mkdir()
        (root / ckpt.name).symlink_to(ckpt.resolve(), target_is_directory=True)
        k = read_config(ckpt / "config.json").get("codebook_size")
        env_extra = {"NUMBA_CACHE_DIR": str(work / "numba")} if args.cold_numba else {}
        load = os.getloadavg()[0]
        exports = [] if args.only_compare else export_both(ckpt, work)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            rows = []
            if not (args.only_compare or args.only_views):
                rows += fresh_and_cached_rows(browser, root, work, env_extra, k, args.screenshots)
                rows.append(disk_cache_row(browser, root, work, env_extra))
            if not args.only_compare:
                rows += views_rows(browser, exports, work, env_extra, k, args.rounds)
            if not args.only_views:
                rows += compare_rows(browser, work, env_extra)
            browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nDashboard bench: {ckpt} ({k} codes), {os.cpu_count()} CPUs, load average at start {load:.1f}"
          f"{', numba cache cold' if args.cold_numba else ''}\n")
    print_rows(rows)


def fresh_and_cached_rows(browser, root: Path, work: Path, env_extra: dict, k, screenshots: Path | None) -> list:
    """A fresh server with an empty projection cache: the first render of the embeddings page;
    then every page once (warming its caches) and again, by sidebar link and by browser reload."""
    rows = []
    server = Server(root, work / "cache1", env_extra)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        first = timed_visit(page, f"{server.url}/code_embeddings")
        rows.append(("server start (until /_stcore/health answers)", (server.ready_s, None), None))
        rows.append((f"code_embeddings, first render, fresh server, UMAP of {k} codes", first, 20.0))
        page.goto(f"{server.url}/code_embeddings")
        for name in PAGES:
            timed_visit(page, f"{server.url}/{name}")
        # In-app navigation (sidebar link): the script reruns, every result from cache.
        page.goto(server.url)
        wait_rendered(page)
        for name in PAGES:
            t = timed_click(page, NAV_LABELS[name])
            rows.append((f"{name}, re-render from cache (sidebar navigation)", t, 2.0))
            if screenshots:
                screenshots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)
        # A browser reload: a new session (the frontend loads again), results from cache.
        for name in PAGES:
            t = timed_visit(page, f"{server.url}/{name}")
            rows.append((f"{name}, re-render from cache (browser reload)", t, 2.0))
    finally:
        server.stop()
    return rows


def compare_rows(browser, work: Path, env_extra: dict) -> list:
    """A fresh server on the six demo checkpoints (the repository's checkpoints/), an empty result cache:
    Compare's first render under the default protocol (what each checkpoint's metrics.json precomputed
    is read, the rest measured), then the sidebar's image size switched from 64 to 32 px and back."""
    from vqexplore.runlayout import DEMO_CHECKPOINTS

    demos = sorted(p.parent.name for p in DEMO_CHECKPOINTS.glob("*/model.safetensors"))
    rows = []
    server = Server(DEMO_CHECKPOINTS, work / "cache-compare", env_extra)
    try:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        t = timed_visit(page, f"{server.url}/compare")
        rows.append((f"compare, first render, fresh server, the {len(demos)} demo checkpoints", t, (5.0, "server")))
        for size, what in (("32", "switch of image size 64 -> 32 px"), ("64", "switch back 32 -> 64 px (cached)")):
            # the view's link with the other size: the same server, its caches warm from the first render
            t = timed_visit(page, f"{server.url}/compare?size={size}")
            rows.append((f"compare, {what}", t, (5.0, "server")))
    finally:
        server.stop()
    return rows


def export_both(ckpt: Path, work: Path) -> list[tuple[str, Path, float]]:
    """``ckpt`` exported with the real command twice: without and with the stored views. Returns
    (label, server root holding only that export, seconds the export took)."""
    out = []
    for label, extra in (("export --no-views", ["--no-views"]), ("export", [])):
        root = work / f"root-{label.replace(' ', '').replace('-', '')}"
        dest = root / f"{ckpt.name}-exported"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "trainer", "export", "--ckpt", str(ckpt), "--to", str(dest), *extra],
                       cwd=REPO, check=True, env={**os.environ, "VQEXPLORE_CACHE_DIR": str(work / "export-cache")},
                       stdout=subprocess.DEVNULL)
        out.append((label, root, time.perf_counter() - t0))
        shutil.rmtree(work / "export-cache", ignore_errors=True)  # the second export computes its views itself
    return out


def views_rows(browser, exports, work: Path, env_extra: dict, k, rounds: int) -> list:
    """A fresh server with an empty cache per visit: Code embeddings of the checkpoint exported without
    its views (before) and with them (after), alternating ``rounds`` times; the median of each."""
    import statistics

    times: dict[str, list] = {label: [] for label, _, _ in exports}
    for r in range(rounds):
        for label, root, _ in exports:
            server = Server(root, work / f"cache-views-{r}-{label.replace(' ', '')}", env_extra)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                times[label].append(timed_visit(page, f"{server.url}/code_embeddings"))
                page.close()
            finally:
                server.stop()
    rows = []
    for label, _, seconds in exports:
        browser_s = statistics.median(t[0] for t in times[label])
        server_s = [t[1] for t in times[label] if t[1] is not None]
        rows.append((f"`python -m trainer {label}` (its own wall time)", (seconds, None), None))
        target = 4.0 if label == "export" else None
        rows.append((f"code_embeddings, fresh server, first render after `{label}` (median of {rounds})",
                     (browser_s, statistics.median(server_s) if server_s else None), target))
    return rows


def disk_cache_row(browser, root: Path, work: Path, env_extra: dict) -> tuple:
    """A fresh server again, the projection on disk: the page is served from the disk cache."""
    shutil.copytree(work / "cache1", work / "cache2")
    server = Server(root, work / "cache2", env_extra)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        t = timed_visit(page, f"{server.url}/code_embeddings")
        return ("code_embeddings, fresh server, projection from disk cache", t, None)
    finally:
        server.stop()


def print_rows(rows: list) -> None:
    print("seconds: in the browser, from navigation until the page is drawn; server: the page script's own time")
    print(f"| {'measurement':<72} | {'seconds':>7} | {'server':>6} | {'target':>6} | ok |")
    print(f"|{'-' * 74}|{'-' * 8}:|{'-' * 7}:|{'-' * 7}:|:--:|")
    for name, (seconds, server_s), target in rows:
        # a target is browser seconds, or (seconds, "server"): the server's own time for the page
        on_server = isinstance(target, tuple)
        limit = target[0] if on_server else target
        measured = server_s if on_server else seconds
        ok = "" if limit is None else ("yes" if measured is not None and measured <= limit else "NO")
        srv = "" if server_s is None else f"{server_s:.2f}"
        want = "" if limit is None else (f"srv <= {limit:g}" if on_server else f"<= {limit:g}")
        print(f"| {name:<72} | {seconds:7.2f} | {srv:>6} | {want:>6} | {ok:^2} |")


if __name__ == "__main__":
    main()
