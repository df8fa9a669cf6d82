"""Latency of the Gradio demo per 64x64 image per checkpoint, on CPU.

Starts ``app/gradio_app.py`` in a subprocess, sends 64x64 photos through ``gradio_client``
one request (one checkpoint) at a time, and times the same work as a bare library call
(``load_image`` + ``prepare_image`` + ``vqexplore.reconstruct``) in this process with the same
number of torch threads a server request gets. Prints a table; the ratio is the cost of the
server (HTTP, queue, PNG encoding, file transfer) on top of the model.

    python bench/demo.py                                  # the demo checkpoints in checkpoints/
    python bench/demo.py --checkpoints DIR --requests 30  # another folder of checkpoint folders
    python bench/demo.py --burst 20                       # also: 20 clients at once (throughput)

Target: under 100 ms per 64x64 image per checkpoint through the server.

The clients use ``ssl_verify=False``: the server is plain http on localhost, and with the
default ``True`` gradio_client builds a certificate-verifying SSL context (loading the CA
bundle, tens of ms of CPU) for every HTTP request it makes, about six per prediction, which
on 2 busy cores cost more than everything the server does.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoints: Path, port: int, concurrency: int, threads: int, tmp: Path) -> subprocess.Popen:
    env = dict(os.environ, VQEXPLORE_CHECKPOINTS=str(checkpoints), VQEXPLORE_HUB_REPOS="",
               VQEXPLORE_CONCURRENCY=str(concurrency), VQEXPLORE_TORCH_THREADS=str(threads),
               GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False",
               GRADIO_TEMP_DIR=str(tmp / "gradio"), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app" / "gradio_app.py")], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the demo server exited ({proc.returncode}):\n{(tmp / 'server.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    sys.exit("the demo server did not start within 300 s")


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) used so far by a process (default: this one), in seconds."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats(times: list[float]) -> tuple[float, float]:
    """median and 90th percentile, in ms."""
    ms = sorted(t * 1000 for t in times)
    return statistics.median(ms), ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]


def main() -> None:
    from vqexplore.hub import is_checkpoint_dir, list_checkpoints

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=Path,
                        default=Path(os.environ.get("VQEXPLORE_CHECKPOINTS") or ROOT / "checkpoints"),
                        help="folder of checkpoint folders (default: the demo set)")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per checkpoint")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per checkpoint first")
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("VQEXPLORE_CONCURRENCY", 2)),
                        help="the server's queue concurrency (VQEXPLORE_CONCURRENCY)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per request (default: the server's default, cores / concurrency)")
    parser.add_argument("--burst", type=int, default=0,
                        help="also send this many requests at once from as many clients (throughput)")
    args = parser.parse_args()

    import numpy as np
    import torch
    from gradio_client import Client, handle_file
    from PIL import Image

    import vqexplore
    from vqexplore.data import builtin_photos, load_image
    from vqexplore.reconstruct import prepare_image, reconstruct

    names = sorted(p.name for p in args.checkpoints.iterdir()
                   if p.is_dir() and (is_checkpoint_dir(p) or list_checkpoints(p))) if args.checkpoints.is_dir() else []
    if not names:
        sys.exit(f"{args.checkpoints} holds no checkpoint folders; pass --checkpoints DIR")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = args.threads or max(1, cores // args.concurrency)

    tmp = Path(tempfile.mkdtemp(prefix="vqexplore-bench-demo-"))
    photos = [prepare_image(img, "64") for _, img in builtin_photos()]
    files = []
    for i, img in enumerate(photos):
        files.append(tmp / f"photo{i}.png")
        Image.fromarray(img).save(files[-1])

    port = free_port()
    t0 = time.perf_counter()
    proc = start_server(args.checkpoints, port, args.concurrency, threads, tmp)
    startup = time.perf_counter() - t0
    served: dict[str, list[float]] = {}
    together: list[float] = []
    burst = None
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, ssl_verify=False)
        cpu = {}
        for name in names:
            times = []
            for k in range(args.warmup + args.requests):
                if k == args.warmup:
                    cpu0 = (cpu_seconds(proc.pid), cpu_seconds())
                path = files[k % len(files)]
                t = time.perf_counter()
                client.predict(handle_file(str(path)), [name], "", "64", api_name="/reconstruct")
                if k >= args.warmup:
                    times.append(time.perf_counter() - t)
            served[name] = times
            cpu[name] = ((cpu_seconds(proc.pid) - cpu0[0]) / args.requests, (cpu_seconds() - cpu0[1]) / args.requests)
        together = []  # one request with every checkpoint: the page's default
        for k in range(args.warmup + args.requests):
            t = time.perf_counter()
            client.predict(handle_file(str(files[k % len(files)])), names, "", "64", api_name="/reconstruct")
            if k >= args.warmup:
                together.append(time.perf_counter() - t)
        if args.burst:
            clients = [Client(f"http://127.0.0.1:{port}/", verbose=False, ssl_verify=False) for _ in range(args.burst)]

            def one(i):
                t = time.perf_counter()
                clients[i].predict(handle_file(str(files[i % len(files)])), [names[i % len(names)]], "", "64",
                                   api_name="/reconstruct")
                return time.perf_counter() - t

            t = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(args.burst) as pool:
                lat = list(pool.map(one, range(args.burst)))
            burst = (time.perf_counter() - t, lat)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()

    # The same work as a bare library call, with the threads a server request gets.
    torch.set_num_threads(threads)
    bare: dict[str, list[float]] = {}
    model_only: dict[str, list[float]] = {}
    for name in names:
        model = vqexplore.load(args.checkpoints / name)
        times, fwd = [], []
        for k in range(args.warmup + args.requests):
            path = files[k % len(files)]
            t = time.perf_counter()
            [r] = reconstruct(model, [prepare_image(load_image(path), "64")])
            t1 = time.perf_counter()
            with torch.no_grad():
                model(torch.from_numpy(np.asarray(photos[k % len(photos)])).permute(2, 0, 1)[None].float() / 127.5 - 1)
            t2 = time.perf_counter()
            if k >= args.warmup:
                times.append(t1 - t)
                fwd.append(t2 - t1)
        bare[name], model_only[name] = times, fwd

    print(f"\nvqexplore demo latency, one 64x64 image per request, one checkpoint per request "
          f"({args.requests} requests each after {args.warmup} warm-up)")
    print(f"CPU cores: {cores}; server: concurrency {args.concurrency} x {threads} torch thread(s); "
          f"torch {torch.__version__}; server start-up {startup:.1f} s")
    header = (f"{'checkpoint':<24} {'params':>8} {'server med':>11} {'server p90':>11} "
              f"{'library med':>12} {'model fwd':>10} {'ratio':>6} {'server CPU':>11} {'client CPU':>11}")
    print(header)
    print("-" * len(header))
    for name in names:
        model = vqexplore.load(args.checkpoints / name)
        params = sum(p.numel() for p in model.parameters())
        s_med, s_p90 = stats(served[name])
        b_med, _ = stats(bare[name])
        f_med, _ = stats(model_only[name])
        print(f"{name:<24} {params / 1e6:>7.2f}M {s_med:>9.1f}ms {s_p90:>9.1f}ms {b_med:>10.1f}ms "
              f"{f_med:>8.1f}ms {s_med / b_med:>6.2f} {cpu[name][0] * 1000:>9.1f}ms {cpu[name][1] * 1000:>9.1f}ms")
    all_served = [t for v in served.values() for t in v]
    print(f"{'all':<24} {'':>8} {stats(all_served)[0]:>9.1f}ms {stats(all_served)[1]:>9.1f}ms "
          f"{stats([t for v in bare.values() for t in v])[0]:>10.1f}ms")
    t_med, t_p90 = stats(together)
    print(f"one request with all {len(names)} checkpoints (the page's default): median {t_med:.1f} ms, "
          f"p90 {t_p90:.1f} ms = {t_med / len(names):.1f} ms per checkpoint")
    print(f"target: < 100 ms per 64x64 image per checkpoint through the server -> "
          f"one checkpoint per request: {'met' if stats(all_served)[0] < 100 else 'NOT met'}; "
          f"all checkpoints per request: {'met' if t_med / len(names) < 100 else 'NOT met'}")
    print("server CPU / client CPU: CPU time the server process / this process spent per request; on a "
          "machine shared with other jobs the wall-clock latency also includes waiting for a core")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {cores} cores")
    if burst:
        wall, lat = burst
        print(f"burst: {args.burst} clients at once: {wall:.2f} s wall, {args.burst / wall:.1f} requests/s, "
              f"latency median {stats(lat)[0]:.0f} ms, max {max(lat) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
