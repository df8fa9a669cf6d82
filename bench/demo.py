"""Latency of the Gradio demo per 64x64 image per checkpoint, on CPU.

Starts ``app/gradio_app.py`` in a subprocess, sends 64x64 photos through ``gradio_client``
one request (one checkpoint) at a time, and times the same work as a bare library call
(``load_image`` + ``prepare_image`` + ``vqexplore.reconstruct``) in this process with the same
number of torch threads a server request gets. Prints a table; the ratio is the cost of the
server (HTTP, queue, PNG encoding, file transfer) on top of the model.

    python bench/demo.py                                  # the demo checkpoints in checkpoints/
    python bench/demo.py --checkpoints DIR --requests 30  # another folder of checkpoint folders
    python bench/demo.py --burst 20                       # also: 20 clients at once (throughput)
    git worktree add /tmp/vqx-before <commit>  # (or git archive <commit> | tar -x -C /tmp/vqx-before)
    python bench/demo.py --baseline /tmp/vqx-before --rounds 3   # before vs after, alternating, one run

``--http``: the requests are sent the way the page's own script and any HTTP client send them, on
one kept-alive connection: POST the image to ``/gradio_api/upload``, POST ``/gradio_api/call/reconstruct``,
read its event stream, GET the four result images. ``gradio_client`` (the default) waits for the
result by polling its message queue every 50 ms (``stream_sse_v1plus``), so with it no request can
take less than about 50 ms plus its HTTP round trips, however fast the server; ``--http`` measures
the server's request path without that floor.

``--baseline DIR``: another checkout of the project (the code before a change); its demo server
(``DIR/app/gradio_app.py`` with ``DIR`` first on ``PYTHONPATH``, so it runs its own ``app`` and
``vqexplore``) and this tree's are timed in alternating rounds on the same checkpoints, and the table
gives both medians and their ratio.

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

from vqexplore.runlayout import DEMO_CHECKPOINTS

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoints: Path, port: int, concurrency: int, threads: int, tmp: Path,
                 tree: Path = ROOT) -> subprocess.Popen:
    """The demo server of the code in ``tree`` (this checkout, or a ``--baseline`` one)."""
    env = dict(os.environ, VQEXPLORE_CHECKPOINTS=str(checkpoints), VQEXPLORE_HUB_REPOS="",
               VQEXPLORE_CONCURRENCY=str(concurrency), VQEXPLORE_TORCH_THREADS=str(threads),
               GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False",
               GRADIO_TEMP_DIR=str(tmp / "gradio"), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    if tree != ROOT:  # its own app and vqexplore first
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen([sys.executable, str(tree / "app" / "gradio_app.py")], cwd=tree, env=env,
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=Path,
                        default=Path(os.environ.get("VQEXPLORE_CHECKPOINTS") or DEMO_CHECKPOINTS),
                        help="folder of checkpoint folders (default: the demo set)")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per checkpoint")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per checkpoint first")
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("VQEXPLORE_CONCURRENCY", 2)),
                        help="the server's queue concurrency (VQEXPLORE_CONCURRENCY)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per request (default: the server's default, cores / concurrency)")
    parser.add_argument("--burst", type=int, default=0,
                        help="also send this many requests at once from as many clients (throughput)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout of the project: time its demo server against this one's")
    parser.add_argument("--http", action="store_true",
                        help="send the requests over plain HTTP (upload, call, event stream, downloads on one "
                             "kept-alive connection) instead of gradio_client, whose 50 ms polling floors them")
    parser.add_argument("--rounds", type=int, default=2,
                        help="with --baseline: alternating rounds (a fresh server of each tree per round)")
    return parser.parse_args()


def main() -> None:
    from PIL import Image

    from vqexplore.data import builtin_photos
    from vqexplore.hub import checkpoints_in
    from vqexplore.reconstruct import prepare_image

    args = parse_args()
    names = [name for name, _, _ in checkpoints_in(args.checkpoints)]
    if not names:
        sys.exit(f"{args.checkpoints} holds no checkpoint folders; pass --checkpoints DIR")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = args.threads or max(1, cores // args.concurrency)
    tmp = Path(tempfile.mkdtemp(prefix="vqexplore-bench-demo-"))
    photos = [prepare_image(img, "64") for _, img in builtin_photos()]
    files = [tmp / f"photo{i}.png" for i in range(len(photos))]
    for img, path in zip(photos, files):
        Image.fromarray(img).save(path)
    if args.baseline is not None:
        compare_trees(args, names, files, threads, tmp)
        return
    server = time_server(args, names, files, threads, tmp)
    bare, model_only = time_library(args, names, files, photos, threads)
    report(args, names, cores, threads, server, bare, model_only)


def compare_trees(args, names: list[str], files: list[Path], threads: int, tmp: Path) -> None:
    """One-checkpoint requests through the baseline tree's server and this tree's, alternating rounds
    (a fresh server each), then per checkpoint both medians, the ratio and the server CPU per request."""
    baseline = args.baseline.resolve()
    if not (baseline / "app" / "gradio_app.py").is_file():
        sys.exit(f"{baseline} is not a checkout of this project (no app/gradio_app.py)")
    trees = {"before": baseline, "after": ROOT}
    served = {t: {n: [] for n in names} for t in trees}
    cpu = {t: {n: [] for n in names} for t in trees}
    for r in range(args.rounds):
        for label, tree in trees.items():
            out = time_server(args, names, files, threads, tmp / f"{label}-{r}", tree=tree, together=False)
            for n in names:
                served[label][n] += out["served"][n]
                cpu[label][n].append(out["cpu"][n][0])
    print(f"\nvqexplore demo latency, before ({baseline}) vs after ({ROOT}): one 64x64 image, one checkpoint per "
          f"request, {args.rounds} alternating rounds x {args.requests} requests per checkpoint (after "
          f"{args.warmup} warm-up); concurrency {args.concurrency} x {threads} torch thread(s); client: "
          f"{'plain HTTP on one kept-alive connection (--http)' if args.http else 'gradio_client'}")
    header = f"{'checkpoint':<24} {'before med':>11} {'after med':>10} {'after/before':>13} " \
             f"{'before CPU':>11} {'after CPU':>10} {'after p90':>10}"
    print(header)
    print("-" * len(header))
    for n in names + ["all"]:
        b = [t for v in served["before"].values() for t in v] if n == "all" else served["before"][n]
        a = [t for v in served["after"].values() for t in v] if n == "all" else served["after"][n]
        bc = [c for v in cpu["before"].values() for c in v] if n == "all" else cpu["before"][n]
        ac = [c for v in cpu["after"].values() for c in v] if n == "all" else cpu["after"][n]
        print(f"{n:<24} {stats(b)[0]:>9.1f}ms {stats(a)[0]:>8.1f}ms {stats(a)[0] / stats(b)[0]:>13.2f} "
              f"{statistics.median(bc) * 1000:>9.1f}ms {statistics.median(ac) * 1000:>8.1f}ms {stats(a)[1]:>8.1f}ms")
    med = stats([t for v in served["after"].values() for t in v])[0]
    print(f"target: <= 50 ms median per one-checkpoint request for a 64x64 image -> "
          f"{'met' if med <= 50 else 'NOT met'}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (a shared machine: compare "
          f"the two columns, measured alternately in one run)")


def time_server(args, names: list[str], files: list[Path], threads: int, tmp: Path, tree: Path = ROOT,
                together: bool = True) -> dict:
    """Latencies through the demo server (of the code in ``tree``): per checkpoint, all checkpoints in
    one request (``together``), a burst; and the CPU seconds per request of the server and of this client."""
    from gradio_client import Client, handle_file

    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = start_server(args.checkpoints, port, args.concurrency, threads, tmp, tree)
    out = {"startup": time.perf_counter() - t0, "served": {}, "cpu": {}, "burst": None}

    def timed(client, k, chosen):
        t = time.perf_counter()
        if isinstance(client, HttpClient):
            client.predict(files[k % len(files)], chosen)
        else:
            client.predict(handle_file(str(files[k % len(files)])), chosen, "", "64", api_name="/reconstruct")
        return time.perf_counter() - t

    try:
        client = HttpClient(port) if args.http else Client(f"http://127.0.0.1:{port}/", verbose=False,
                                                          ssl_verify=False)
        for name in names:
            for k in range(args.warmup):
                timed(client, k, [name])
            cpu0 = (cpu_seconds(proc.pid), cpu_seconds())
            out["served"][name] = [timed(client, k, [name]) for k in range(args.warmup, args.warmup + args.requests)]
            out["cpu"][name] = ((cpu_seconds(proc.pid) - cpu0[0]) / args.requests,
                                (cpu_seconds() - cpu0[1]) / args.requests)
        # one request with every checkpoint: the page's default
        if together:
            out["together"] = [timed(client, k, names) for k in range(args.warmup + args.requests)][args.warmup:]
        if args.burst and together:
            clients = [Client(f"http://127.0.0.1:{port}/", verbose=False, ssl_verify=False) for _ in range(args.burst)]
            t = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(args.burst) as pool:
                lat = list(pool.map(lambda i: timed(clients[i], i, [names[i % len(names)]]), range(args.burst)))
            out["burst"] = (time.perf_counter() - t, lat)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return out


class HttpClient:
    """The demo's HTTP API on one kept-alive connection, as the page's script uses it: upload the image,
    call ``reconstruct``, read the event stream until it completes, download every result file."""

    def __init__(self, port: int):
        import http.client

        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> bytes:
        self.conn.request(method, path, body=body, headers=headers or {})
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {r.status}: {data[:200]!r}")
        return data

    def predict(self, file: Path, chosen: list[str]) -> list:
        import json
        from urllib.parse import quote

        boundary = "----vqexplore-bench"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{file.name}\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + file.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        [path] = json.loads(self._request("POST", "/gradio_api/upload", body,
                                          {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
        call = json.dumps({"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, chosen, "", "64"]})
        event_id = json.loads(self._request("POST", "/gradio_api/call/reconstruct", call.encode(),
                                            {"Content-Type": "application/json"}))["event_id"]
        event, outputs = None, None
        for line in self._request("GET", f"/gradio_api/call/reconstruct/{event_id}").decode().splitlines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                outputs = json.loads(line.split(":", 1)[1])
        if event != "complete":
            raise RuntimeError(f"reconstruct: {event}: {outputs}")
        files = [outputs[0]] + [item["image"] for item in outputs[1]]
        for f in files:
            self._request("GET", f"/gradio_api/file={quote(f['path'])}")
        return outputs


def time_library(args, names: list[str], files: list[Path], photos: list, threads: int) -> tuple[dict, dict]:
    """The same work as a bare library call (decode + reconstruct), and the model's forward alone,
    with the threads a server request gets: ({name: seconds}, {name: seconds})."""
    import numpy as np
    import torch

    import vqexplore
    from vqexplore.data import load_image
    from vqexplore.reconstruct import prepare_image, reconstruct

    torch.set_num_threads(threads)
    bare: dict[str, list[float]] = {}
    model_only: dict[str, list[float]] = {}
    for name in names:
        model = vqexplore.load(args.checkpoints / name)
        times, fwd = [], []
        for k in range(args.warmup + args.requests):
            t = time.perf_counter()
            reconstruct(model, [prepare_image(load_image(files[k % len(files)]), "64")])
            t1 = time.perf_counter()
            with torch.no_grad():
                model(torch.from_numpy(np.asarray(photos[k % len(photos)])).permute(2, 0, 1)[None].float() / 127.5 - 1)
            if k >= args.warmup:
                times.append(t1 - t)
                fwd.append(time.perf_counter() - t1)
        bare[name], model_only[name] = times, fwd
    return bare, model_only


def report(args, names, cores, threads, server: dict, bare: dict, model_only: dict) -> None:
    import torch

    import vqexplore

    served, cpu = server["served"], server["cpu"]
    print(f"\nvqexplore demo latency, one 64x64 image per request, one checkpoint per request "
          f"({args.requests} requests each after {args.warmup} warm-up)")
    print(f"CPU cores: {cores}; server: concurrency {args.concurrency} x {threads} torch thread(s); "
          f"torch {torch.__version__}; server start-up {server['startup']:.1f} s")
    header = (f"{'checkpoint':<24} {'params':>8} {'server med':>11} {'server p90':>11} "
              f"{'library med':>12} {'model fwd':>10} {'ratio':>6} {'server CPU':>11} {'client CPU':>11}")
    print(header)
    print("-" * len(header))
    for name in names:
        params = sum(p.numel() for p in vqexplore.load(args.checkpoints / name).parameters())
        s_med, s_p90 = stats(served[name])
        b_med, f_med = stats(bare[name])[0], stats(model_only[name])[0]
        print(f"{name:<24} {params / 1e6:>7.2f}M {s_med:>9.1f}ms {s_p90:>9.1f}ms {b_med:>10.1f}ms "
              f"{f_med:>8.1f}ms {s_med / b_med:>6.2f} {cpu[name][0] * 1000:>9.1f}ms {cpu[name][1] * 1000:>9.1f}ms")
    all_served = [t for v in served.values() for t in v]
    print(f"{'all':<24} {'':>8} {stats(all_served)[0]:>9.1f}ms {stats(all_served)[1]:>9.1f}ms "
          f"{stats([t for v in bare.values() for t in v])[0]:>10.1f}ms")
    t_med, t_p90 = stats(server["together"])
    print(f"one request with all {len(names)} checkpoints (the page's default): median {t_med:.1f} ms, "
          f"p90 {t_p90:.1f} ms = {t_med / len(names):.1f} ms per checkpoint")
    print(f"target: < 100 ms per 64x64 image per checkpoint through the server -> "
          f"one checkpoint per request: {'met' if stats(all_served)[0] < 100 else 'NOT met'}; "
          f"all checkpoints per request: {'met' if t_med / len(names) < 100 else 'NOT met'}")
    print("server CPU / client CPU: CPU time the server process / this process spent per request; on a "
          "machine shared with other jobs the wall-clock latency also includes waiting for a core")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {cores} cores")
    if server["burst"]:
        wall, lat = server["burst"]
        print(f"burst: {args.burst} clients at once: {wall:.2f} s wall, {args.burst / wall:.1f} requests/s, "
              f"latency median {stats(lat)[0]:.0f} ms, max {max(lat) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
