"""The cases of a hostile probe, kept as tables so that a new feature cannot reopen them:
security of the hosted apps, images, config, loading, run folders.

Everything runs for real: the Gradio demo as a server in a subprocess (raw HTTP calls, the way
an attacker sends them, not only gradio_client), the dashboard through Streamlit's AppTest,
checkpoints written by ``save_pretrained``, the trainer as ``python -m trainer``."""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.dashboard import FOLDER_VARS
from helpers.servers import ROOT, start_demo, stop
from test_gradio_app import make_checkpoints, photo

MAX_FILE_SIZE = 1024 * 1024  # the hostile server's limit: "1mb"
FILE_TTL = 4                 # seconds the hostile server keeps uploads and result images


# ------------------------------------------------------------------------------------------
# The demo, hosted: one server with a small size limit and a short file lifetime
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    """(url, its Gradio upload folder, a folder outside it holding a real image, checkpoint names)."""
    tmp = tmp_path_factory.mktemp("hostile")
    checkpoints = make_checkpoints(tmp / "checkpoints")
    gray_checkpoint(tmp / "checkpoints" / "tiny-gray")
    outside = tmp / "server-files"
    outside.mkdir()
    Image.fromarray(photo(64, 64, seed=5)).save(outside / "secret.png")
    (outside / "notes.txt").write_text("private\n")
    upload = tmp / "gradio-tmp"
    proc, url, log_path = start_demo(tmp, tmp / "checkpoints", GRADIO_TEMP_DIR=str(upload),
                                     VQEXPLORE_MAX_FILE_SIZE="1mb", VQEXPLORE_FILE_TTL=str(FILE_TTL))
    try:
        yield dict(url=url, upload=upload, outside=outside, names=list(checkpoints), proc=proc, log=log_path,
                   checkpoints=tmp / "checkpoints")
    finally:
        stop(proc)


def gray_checkpoint(folder: Path) -> None:
    """A valid checkpoint of a 1-channel tokenizer: the apps, which show RGB images, cannot use it."""
    from vqexplore import VQModel

    VQModel(quantizer="vq", codebook_size=16, code_dim=4, hidden_dim=8, n_resblocks=1,
            in_channels=1).save_pretrained(folder)


def api(url: str, data: list, api_name: str = "reconstruct", timeout: float = 120) -> tuple[str, object]:
    """One call of the demo's HTTP API as any script can send it: POST /gradio_api/call/<name>,
    then read the event stream. Returns ("complete", outputs) or ("error", message)."""
    body = json.dumps({"data": data}).encode()
    req = urllib.request.Request(f"{url}gradio_api/call/{api_name}", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        event_id = json.loads(r.read())["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/{api_name}/{event_id}", timeout=timeout) as r:
        text = r.read().decode()
    event, payload = None, None
    for line in text.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and event in ("complete", "error"):
            payload = json.loads(line.split(":", 1)[1].strip() or "null")
    if event == "error" and isinstance(payload, dict):
        payload = payload.get("error")
    return event, payload


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def upload_file(url: str, data: bytes, name: str = "image.png") -> str:
    """POST a file to Gradio's upload route the way the page does; returns its server path."""
    boundary = "----vqexplore-test"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{url}gradio_api/upload", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())[0]


def server_path_cases(upload: Path, outside: Path) -> dict[str, dict]:
    """name -> an image payload naming a server file that was not uploaded."""
    upload.mkdir(parents=True, exist_ok=True)
    link = upload / "link-to-secret.png"  # a link inside the upload folder to a file outside it
    if not link.is_symlink():
        link.symlink_to(outside / "secret.png")
    sibling = upload.parent / f"{upload.name}-evil"  # named like the upload folder, beside it
    sibling.mkdir(exist_ok=True)
    (sibling / "secret.png").write_bytes((outside / "secret.png").read_bytes())
    return {
        "an image outside the upload folder": {"path": str(outside / "secret.png")},
        "a text file": {"path": str(outside / "notes.txt")},
        "a folder": {"path": str(outside)},
        "a missing file": {"path": str(outside / "missing.png")},
        "system file": {"path": "/etc/passwd"},
        "relative path": {"path": "checkpoints/vq-4096/config.json"},
        "traversal out of the upload folder": {"path": str(upload / ".." / "server-files" / "secret.png")},
        "symlink in the upload folder": {"path": str(link)},
        "sibling folder whose name starts with the upload folder's": {"path": str(sibling / "secret.png")},
        "http URL": {"url": "http://127.0.0.1:1/secret.png"},
        "file URL": {"url": f"file://{outside / 'secret.png'}"},
    }


def test_demo_refuses_every_server_path_with_one_message(hostile_server):
    """Item 1: only files inside Gradio's upload folder are read; every other payload gets the
    same refusal, so the answer says nothing about the server's disk."""
    s = hostile_server
    answers = {}
    for name, payload in server_path_cases(s["upload"], s["outside"]).items():
        event, message = api(s["url"], [payload, s["names"][:1], "", "64"])
        assert event == "error", f"{name}: the server answered {event}: {message}"
        answers[name] = message
    assert len(set(answers.values())) == 1, answers
    assert "did not come from this page's upload" in next(iter(answers.values()))
    # A real upload still works, through the same raw API.
    path = upload_file(s["url"], png_bytes(photo(64, 64, seed=9)))
    event, outputs = api(s["url"], [{"path": path, "meta": {"_type": "gradio.FileData"}}, s["names"][:1], "", "64"])
    assert event == "complete", outputs


def test_demo_one_size_limit_for_every_way_an_image_arrives(hostile_server):
    """Item 5: an upload, a file in the upload folder and a data: URL all meet the same limit
    (1 MB on this server), and a data: URL over it is refused before it is decoded."""
    s = hostile_server
    names = s["names"][:1]
    big = os.urandom(MAX_FILE_SIZE + 300_000)  # not an image: a decoded one would say "not readable"
    with pytest.raises(urllib.error.HTTPError) as info:
        upload_file(s["url"], big)
    assert info.value.code == 413
    data_url = "data:image/png;base64," + base64.b64encode(big).decode()
    event, message = api(s["url"], [{"url": data_url}, names, "", "64"])
    assert event == "error" and "over this demo's limit of 1.0 MB" in message, message
    s["upload"].mkdir(parents=True, exist_ok=True)
    placed = s["upload"] / "placed-big.png"  # e.g. left by another app sharing the folder
    placed.write_bytes(big)
    try:
        event, message = api(s["url"], [{"path": str(placed)}, names, "", "64"])
    finally:
        placed.unlink()
    assert event == "error" and "over this demo's limit of 1.0 MB" in message, message
    # Under the limit, a data: URL is an image like any other.
    small = "data:image/png;base64," + base64.b64encode(png_bytes(photo(64, 64, seed=3))).decode()
    event, outputs = api(s["url"], [{"url": small}, names, "", "64"])
    assert event == "complete", outputs


@pytest.mark.parametrize("typed", ["checkpoints/vq-4096", "tests/test_hub.py", "app/views", "nobody/nothing"])
def test_demo_typed_ids_are_hub_ids_only(hostile_server, typed):
    """Item 3: a typed id never loads a server folder (``checkpoints/vq-4096`` exists in the
    server's working folder) and the answer does not depend on what exists there."""
    s = hostile_server
    path = upload_file(s["url"], png_bytes(photo(64, 64, seed=1)))
    event, message = api(s["url"], [{"path": path, "meta": {"_type": "gradio.FileData"}}, [], typed, "64"])
    assert event == "error", f"{typed} was loaded: {message}"
    assert message == f"{typed}: cannot download {typed} from the Hub (offline or unreachable) and it is not in " \
                      f"the local cache; connect to the internet or pass a local checkpoint folder.", message


def test_demo_failure_names_the_checkpoint_and_the_field(hostile_server):
    """Item 11 (app): a checkpoint the demo cannot run is named with the reason, not "The
    reconstruction failed (RuntimeError)"."""
    s = hostile_server
    path = upload_file(s["url"], png_bytes(photo(64, 64, seed=2)), name="holiday.png")
    event, message = api(s["url"], [{"path": path, "meta": {"_type": "gradio.FileData"}}, ["tiny-gray"], "", "64"])
    assert event == "error"
    assert message.startswith("tiny-gray: the checkpoint takes 1-channel images (in_channels=1)"), message


# ------------------------------------------------------------------------------------------
# The demo, malformed: every refusal is one sentence (issue 19), never an empty error event
# ------------------------------------------------------------------------------------------

def _uploaded(s, img: np.ndarray, name: str = "image.png") -> dict:
    return {"path": upload_file(s["url"], png_bytes(img), name=name), "meta": {"_type": "gradio.FileData"}}


def _surgery(s, code) -> tuple[str, object]:
    return api(s["url"], [_uploaded(s, photo(64, 64, seed=4)), s["names"][0], "64", "3,4", "id", code], "surgery")


def _expired_upload(s) -> tuple[str, object]:
    """An upload deleted by the TTL after Gradio accepted it and before the handler ran (the
    queue's window), played in process: the handler gets the path of a file that is gone."""
    import gradio as gr

    from app import gradio_app

    folder = s["upload"] / "expired-upload"
    demo = gradio_app.Demo([gradio_app.Entry(s["names"][0], str(s["checkpoints"] / s["names"][0]))])
    try:
        demo.run(str(folder / "holiday.png"), [s["names"][0]], "", "64")
    except gr.Error as e:
        return "error", e.message
    return "complete", None


DEMO_PAYLOAD_CASES = {  # name -> (the call, phrase of its one-sentence answer)
    "NUL byte in the path": (lambda s: api(s["url"], [{"path": "/tmp/a\x00b.png"}, s["names"][:1], "", "64"]),
                             "did not come from this page's upload"),
    "an integer as the path": (lambda s: api(s["url"], [{"path": 5}, s["names"][:1], "", "64"]),
                               "did not come from this page's upload"),
    "a list as the path": (lambda s: api(s["url"], [{"path": ["/etc/passwd"]}, s["names"][:1], "", "64"]),
                           "did not come from this page's upload"),
    "a bare string as the image": (lambda s: api(s["url"], ["/etc/passwd", s["names"][:1], "", "64"]),
                                   "did not come from this page's upload"),
    "a 5,000-character file name": (lambda s: api(s["url"], [{"path": "/tmp/" + "x" * 5000, "meta": {
        "_type": "gradio.FileData"}}, s["names"][:1], "", "64"]), "did not come from this page's upload"),
    "a server path sent with meta": (lambda s: api(s["url"], [
        {"path": str(s["outside"] / "secret.png"), "meta": {"_type": "gradio.FileData"}}, s["names"][:1], "", "64"]),
        "did not come from this page's upload"),
    "code id NaN": (lambda s: _surgery(s, float("nan")), "Code id (for 'a code id') must be a whole number, got nan"),
    "code id a string": (lambda s: _surgery(s, "abc"), "must be a whole number, got str"),
    "code id a list": (lambda s: _surgery(s, [1, 2]), "must be a whole number, got list"),
    "checkpoints null": (lambda s: api(s["url"], [_uploaded(s, photo(64, 64)), None, "", "64"]),
                         "Checkpoints (demo set) must be a list of names"),
    "a 5,000-character typed id": (lambda s: api(s["url"], [_uploaded(s, photo(64, 64)), [], "a/" + "b" * 5000, "64"]),
                                   "A typed repo id is 5,002 characters long; Hub repo ids are at most 96"),
    "native 4x4": (lambda s: api(s["url"], [_uploaded(s, photo(4, 4)), s["names"][:1], "", "native"]),
                   "native resolution needs both sides at least 8 pixels"),
    "native 10000x2": (lambda s: api(s["url"], [_uploaded(s, photo(2, 10000)), s["names"][:1], "", "native"]),
                       "is 10000x2 pixels; native resolution needs both sides at least 8 pixels"),
    "native 100000x4, downscaled": (lambda s: api(s["url"], [_uploaded(s, photo(4, 100000)), s["names"][:1], "",
                                                             "native"]), "too elongated for native resolution"),
    "an upload deleted by the TTL while queued": (_expired_upload, "was deleted before its turn came"),
}


@pytest.mark.parametrize("case", list(DEMO_PAYLOAD_CASES))
def test_demo_malformed_payloads_get_one_sentence(hostile_server, case):
    """Issue 19: each malformed value is one sentence naming the field or the fix (these got an
    empty error event, Gradio's blank refusal, the wrong culprit or a server path), and no
    answer holds a server path."""
    s = hostile_server
    call, phrase = DEMO_PAYLOAD_CASES[case]
    event, message = call(s)
    assert event == "error" and isinstance(message, str) and phrase in message, (event, message)
    assert "\n" not in message and len(message) < 400, message
    assert str(s["upload"]) not in message and str(s["outside"]) not in message and "/tmp" not in message, message


def test_demo_request_body_limit(hostile_server):
    """Issue 19: a body over VQEXPLORE_MAX_BODY_SIZE (16 MB by default) is refused with 413 from
    its Content-Length before it is read, or while streaming without one; the answer is one short
    sentence that does not echo the request, and a 422 for a malformed body echoes nothing."""
    s = hostile_server
    status, answer, _ = _post_declared(s["url"], 300 * 2 ** 20)
    assert status == 413 and "over this demo's limit of 16.0 MB" in answer and len(answer) < 400, answer
    status, answer, sent = _post_chunked(s["url"], 300 * 2 ** 20)
    assert status == 413 and "over this demo's limit of 16.0 MB" in answer, answer
    assert sent < 100 * 2 ** 20, f"the server read {sent / 2 ** 20:.0f} MB before refusing"
    marker = "ECHO-" * 1000
    req = urllib.request.Request(f"{s['url']}gradio_api/call/reconstruct", data=json.dumps({"data": marker}).encode(),
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=60)
    body = info.value.read().decode()
    assert info.value.code == 422 and "ECHO" not in body and "malformed" in body, body[:500]


def _post_declared(url: str, size: int) -> tuple[int, str, int]:
    """POST a JSON call declaring ``size`` bytes; the answer is read before any of it is sent."""
    import http.client
    from urllib.parse import urlparse

    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.putrequest("POST", "/gradio_api/call/reconstruct")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    r = conn.getresponse()
    status, text = r.status, r.read().decode()
    conn.close()
    return status, text, 0


def _post_chunked(url: str, size: int, chunk: int = 2 ** 20) -> tuple[int, str, int]:
    """Stream up to ``size`` bytes of a JSON body without a Content-Length (chunked), 1 MB at a
    time (never built whole in this process), until the server answers. -> (status, body, sent)."""
    import select
    import socket
    from urllib.parse import urlparse

    u = urlparse(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=60)
    sock.sendall(b"POST /gradio_api/call/reconstruct HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    piece = b"%x\r\n" % chunk + b'{"data": ["' + b"A" * (chunk - 11) + b"\r\n"
    sent = 0
    try:
        while sent < size and not select.select([sock], [], [], 0)[0]:
            sock.sendall(piece)
            sent += chunk
    except (BrokenPipeError, ConnectionResetError):
        pass
    data = b""
    try:
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 20:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    except (ConnectionResetError, socket.timeout):
        pass
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head else 0
    return status, body.decode(errors="replace"), sent


# ------------------------------------------------------------------------------------------
# The demo's memory: hostile images stay within the budget (issue 19)
# ------------------------------------------------------------------------------------------

def _png_rgba16(width: int, height: int) -> bytes:
    """A 16-bit RGBA PNG of ``width x height`` one colour, written row filter "Up" so that it
    compresses to a few hundred KB (made without holding the raw image)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    pixel = struct.pack(">HHHH", 0x8000, 0x4000, 0xC000, 0x9000)
    z = zlib.compressobj(9)
    parts = [z.compress(b"\x00" + pixel * width)]
    up = b"\x02" + b"\x00" * (8 * width)
    parts += [z.compress(up) for _ in range(height - 1)]
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def _strip_png(width: int) -> bytes:
    return png_bytes(photo(1, width, seed=1))


class _PeakRSS:
    """Resident memory growth of a process over a block: its peak (VmHWM, reset through
    /proc/PID/clear_refs) minus its resident size before."""

    def __init__(self, pid: int):
        self.pid = pid

    def _status(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    def __enter__(self):
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.before = self._status("VmRSS")
        return self

    def __exit__(self, *exc):
        self.growth = self._status("VmHWM") - self.before


BUDGET_GROWTH = 512 * 2 ** 20


def test_demo_memory_stays_within_budget_on_hostile_images(hostile_server):
    """Issue 19's probe as a test: each hostile request gets one clear refusal or a correct
    answer, and the demo server's resident memory grows by less than 512 MB for each (on main
    4aa2442: +3.9 GB for the 100000x1 strip, over 10 GB for 300000x1, +2.0 GB for the RGBA)."""
    s = hostile_server
    names = s["names"][:1]
    cases = {
        "100000x1 PNG, 64 mode": (_strip_png(100_000), "64"),
        "300000x1 PNG, 64 mode": (_strip_png(300_000), "64"),
        "100000x1 PNG, native": (_strip_png(100_000), "native"),
        "6300x6300 16-bit RGBA PNG, 64 mode": (_png_rgba16(6300, 6300), "64"),
    }
    growth = {}
    for name, (data, mode) in cases.items():
        assert len(data) < MAX_FILE_SIZE, (name, len(data))
        path = upload_file(s["url"], data)
        with _PeakRSS(s["proc"].pid) as rss:
            event, out = api(s["url"], [{"path": path, "meta": {"_type": "gradio.FileData"}}, names, "", mode])
        growth[name] = rss.growth
        if event == "error":
            assert isinstance(out, str) and out and "\n" not in out, (name, out)
        else:
            assert event == "complete", (name, event, out)
    with _PeakRSS(s["proc"].pid) as rss:
        status, _, _ = _post_chunked(s["url"], 300 * 2 ** 20)
    assert status == 413
    growth["300 MB body"] = rss.growth
    over = {k: f"{v / 2 ** 20:.0f} MB" for k, v in growth.items() if v >= BUDGET_GROWTH}
    assert not over, f"resident memory grew too much: {over}; all: " + \
        ", ".join(f"{k} +{v / 2 ** 20:.0f} MB" for k, v in growth.items())
    print("demo server RSS growth:", ", ".join(f"{k} +{v / 2 ** 20:.0f} MB" for k, v in growth.items()))


def _left_files(upload: Path) -> list[Path]:
    """Uploads and result images in the upload folder (the example photos stay by design)."""
    if not upload.exists():
        return []
    return sorted(p for p in upload.rglob("*") if p.is_file() and not p.is_symlink()
                  and "vqexplore-examples" not in p.parts and p.suffix != ".tmp"
                  and not _is_example_copy(p))


def _is_example_copy(p: Path) -> bool:
    names = {"astronaut.png", "coffee.png", "rocket.png", "motorcycle.png", "grace_hopper.png", "flower.png",
             "chelsea.png", "china.png"}
    return p.name in names


# ------------------------------------------------------------------------------------------
# Images in the library: the dashboard's upload and the data loaders share the demo's decoding
# ------------------------------------------------------------------------------------------

_IMAGE_SCRIPT = r"""
import io, json, sys
from pathlib import Path
import numpy as np

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

from vqexplore.data import ImageFolderDataset, load_image
from vqexplore.errors import ImageError
from vqexplore.reconstruct import prepare_image
case, source, mode = sys.argv[1], sys.argv[2], sys.argv[3]
data = Path(source).read_bytes()
Path("/proc/self/clear_refs").write_text("5")
before = status("VmRSS")
try:
    if mode == "folder":
        ds = ImageFolderDataset(Path(source).parent, np.array([Path(source).name.encode()]), size=64, in_memory=False)
        answer = ["shape", list(ds._resized(0).shape)]  # resized shorter side; crops are cut from it
    else:
        answer = ["shape", list(prepare_image(load_image(io.BytesIO(data), name="upload.png"), mode).shape)]
except ImageError as e:
    answer = ["ImageError", str(e)]
print(json.dumps({"answer": answer, "growth_mb": (status("VmHWM") - before) / 2 ** 20}))
"""

IMAGE_CASES = {  # name -> (image bytes, mode, budget, expected answer phrase, most growth in MB)
    "100000x1, 64 x 64 crop": (lambda: _strip_png(100_000), "64", None, "[64, 64, 3]", 64),
    "300000x1, 64 x 64 crop": (lambda: _strip_png(300_000), "64", None, "[64, 64, 3]", 64),
    "100000x1 in a training folder": (lambda: _strip_png(100_000), "folder", None, "[64, 256, 3]", 64),
    "16-bit 6300x6300 RGBA, 64 x 64 crop": (lambda: _png_rgba16(6300, 6300), "64", None, "[64, 64, 3]", 384),
    "16-bit 6300x6300 RGBA over a 64 MB budget": (lambda: _png_rgba16(6300, 6300), "64", "64mb",
                                                 "more than the limit of 64 MB; downscale it", 40),
}


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_image_decoding_stays_within_the_budget(tmp_path, case):
    """Issue 19, the library side: what the dashboard's upload and the data loaders decode is
    cropped before it is resized (a 1-pixel strip is not resized to 64 rows first), converted in
    strips without 32/64-bit widening, and refused from its header when over
    VQEXPLORE_MEMORY_BUDGET; the process's resident memory grows by no more than the case allows."""
    make, mode, budget, phrase, most = IMAGE_CASES[case]
    path = tmp_path / "image.png"
    path.write_bytes(make())
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("VQEXPLORE_MEMORY_BUDGET", None)
    if budget:
        env["VQEXPLORE_MEMORY_BUDGET"] = budget
    proc = subprocess.run([sys.executable, "-c", _IMAGE_SCRIPT, case, str(path), mode], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    kind, answer = out["answer"]
    assert phrase in (json.dumps(answer) if kind == "shape" else answer), out
    assert out["growth_mb"] < most, f"{case}: grew by {out['growth_mb']:.0f} MB"


def test_demo_deletes_uploads_and_results_on_schedule_and_at_exit(hostile_server):
    """Item 6: uploads and result images older than VQEXPLORE_FILE_TTL (4 s here) are deleted
    while the server runs, and all of them when it stops (SIGTERM, as docker stop sends)."""
    s = hostile_server
    path = upload_file(s["url"], png_bytes(photo(72, 72, seed=11)))
    event, outputs = api(s["url"], [{"path": path, "meta": {"_type": "gradio.FileData"}}, s["names"], "", "64"])
    assert event == "complete", outputs
    made = _left_files(s["upload"])
    assert any("vqexplore-outputs" in p.parts for p in made) and Path(path) in made, made
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(p.exists() for p in made):
        time.sleep(1)
    assert not [p for p in made if p.exists()], "not deleted after the TTL"
    # At exit: files younger than the TTL go too.
    path = upload_file(s["url"], png_bytes(photo(76, 76, seed=12)))
    event, outputs = api(s["url"], [{"path": path, "meta": {"_type": "gradio.FileData"}}, s["names"], "", "64"])
    assert event == "complete", outputs
    assert _left_files(s["upload"])
    stop(s["proc"])
    assert s["proc"].returncode == 0, s["log"].read_text()[-3000:]
    assert _left_files(s["upload"]) == []


# ------------------------------------------------------------------------------------------
# The dashboard, hosted: confined to its checkpoint and run roots
# ------------------------------------------------------------------------------------------

@pytest.fixture
def dashboard_tree(tmp_path, monkeypatch):
    from test_dashboard import build_fixture_tree

    paths = build_fixture_tree(tmp_path / "served")
    for key, env in FOLDER_VARS.items():
        monkeypatch.setenv(env, str(paths[key]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    return paths


def _dashboard_answer(text: str) -> tuple[list[str], list[str]]:
    """(errors, selected sources) after typing ``text`` into the dashboard's source box."""
    from test_dashboard import _app

    at = _app()
    at.sidebar.text_input(key="new_source").input(text).run()
    assert not at.exception, [e.value for e in at.exception]
    return [e.value for e in at.error], list(at.sidebar.multiselect(key="w_selected_sources").value)


def test_confined_dashboard_loads_nothing_outside_its_roots(dashboard_tree, tmp_path, monkeypatch):
    """Item 4: confined as the Docker image's ENV sets it (VQEXPLORE_CONFINE=1), a typed server
    path outside the checkpoint and run roots is refused with one message whatever it points
    at, even a valid checkpoint; folders inside the roots and Hub repo ids still work."""
    import shutil

    from test_docker import parse_dockerfile

    monkeypatch.setenv("VQEXPLORE_CONFINE", parse_dockerfile().env.get("VQEXPLORE_CONFINE", ""))
    outside = tmp_path / "elsewhere"
    shutil.copytree(dashboard_tree["checkpoints"] / "vq-64", outside / "vq-64")
    sibling = dashboard_tree["checkpoints"].parent / f"{dashboard_tree['checkpoints'].name}-evil"
    shutil.copytree(dashboard_tree["checkpoints"] / "vq-64", sibling / "vq-64")
    cases = {
        "a valid checkpoint outside": str(outside / "vq-64"),
        "a system folder": "/etc",
        "a system file": "/etc/passwd",
        "a missing path": "/no/such/folder",
        "traversal out of a root": str(dashboard_tree["checkpoints"] / ".." / ".." / "elsewhere" / "vq-64"),
        "home": "~",
        "a sibling of the checkpoint root named like it": str(sibling / "vq-64"),
    }
    answers = {}
    for name, text in cases.items():
        errors, selected = _dashboard_answer(text)
        assert len(errors) == 1 and not any(text in s for s in selected), (name, errors, selected)
        answers[name] = errors[0].replace(text, "<typed>")
    assert len(set(answers.values())) == 1, answers
    assert "nor a folder inside" in next(iter(answers.values()))
    # Inside the roots: a path works; a Hub id goes to the Hub (offline here: the usual message).
    errors, selected = _dashboard_answer(str(dashboard_tree["run"]))
    assert not errors and any(str(dashboard_tree["run"]) in s for s in selected), (errors, selected)
    errors, _ = _dashboard_answer("someone/not-cached")
    assert len(errors) == 1 and "cannot download someone/not-cached" in errors[0]
    # Not confined (a laptop): the outside checkpoint loads.
    monkeypatch.setenv("VQEXPLORE_CONFINE", "0")
    errors, selected = _dashboard_answer(str(outside / "vq-64"))
    assert not errors and any(str(outside / "vq-64") in s for s in selected), errors


def test_confined_dashboard_does_not_list_links_that_lead_outside(dashboard_tree, tmp_path, monkeypatch):
    """Issue 19: confined, a symlink in the checkpoint root (or run root) that points outside the
    roots is not offered in the sidebar (it was listed, then refused on every page); links that
    stay inside are; not confined, the outside link is listed as before."""
    import shutil

    from test_dashboard import _app

    outside = tmp_path / "elsewhere"
    shutil.copytree(dashboard_tree["checkpoints"] / "vq-64", outside / "vq-64")
    (dashboard_tree["checkpoints"] / "linked-out").symlink_to(outside / "vq-64")
    (dashboard_tree["checkpoints"] / "linked-in").symlink_to(dashboard_tree["checkpoints"] / "vq-64")
    (dashboard_tree["runs"] / "run-out").symlink_to(outside)
    monkeypatch.setenv("VQEXPLORE_CONFINE", "1")
    at = _app()
    assert not at.exception, [e.value for e in at.exception]
    options = list(at.sidebar.multiselect(key="w_selected_sources").options)
    assert "linked-in" in options and "vq-64" in options, options
    assert not [o for o in options if "out" in o], options
    assert not at.error, [e.value for e in at.error]
    monkeypatch.setenv("VQEXPLORE_CONFINE", "0")
    at = _app()
    assert "linked-out" in list(at.sidebar.multiselect(key="w_selected_sources").options)


def test_dashboard_unexpected_error_is_one_line_naming_the_checkpoint(dashboard_tree):
    """Item 11 (app): an error the dashboard did not foresee is one line naming the checkpoint;
    the traceback goes to the server log, not into an expander on the visitor's page."""
    from test_dashboard import _app

    gray_checkpoint(dashboard_tree["checkpoints"] / "gray-16")
    at = _app()
    at.sidebar.multiselect(key="w_selected_sources").set_value(["gray-16", "vq-64"]).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("gray-16: unexpected RuntimeError"), errors
    assert "server log" in errors[0] and "Traceback" not in errors[0] and "\n" not in errors[0]
    assert len(at.expander) == 0 and len(at.code) == 0
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 1  # vq-64 still measured


# ------------------------------------------------------------------------------------------
# Loading: a checkpoint's config.json is checked against its weights before any allocation
# ------------------------------------------------------------------------------------------

def _edit_config(**changes):
    def edit(folder: Path) -> None:
        cfg = json.loads((folder / "config.json").read_text())
        cfg.update(changes)
        (folder / "config.json").write_text(json.dumps(cfg))
    return edit


def _restore_weights(folder: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    change(state)
    save_file(state, str(folder / "model.safetensors"))


LOADING_CASES = {  # name -> (change to a saved vq-512 checkpoint, phrase of the one CheckpointError)
    "codebook of 40M codes (10 GiB)": (_edit_config(codebook_size=40_000_000), "codebook_size: 40,000,000 makes"),
    "codebook of 20M codes (5 GiB, under the size limit)": (
        _edit_config(codebook_size=20_000_000), "quantizer.embedding is (512, 64) in the weights, (20000000, 64)"),
    "hidden_dim 10^6": (_edit_config(hidden_dim=1_000_000), "hidden_dim: 1,000,000 makes"),
    "n_resblocks 10^6": (_edit_config(n_resblocks=1_000_000), "n_resblocks: must be at most 256"),
    "in_channels 10^9": (_edit_config(in_channels=10 ** 9), "in_channels: 1,000,000,000 makes"),
    "code_dim 10^8": (_edit_config(code_dim=10 ** 8), "code_dim: 100,000,000 makes"),
    "more resblocks than the weights hold": (_edit_config(n_resblocks=3), "the weights file lacks decoder.net"),
    "string commitment_weight": (_edit_config(commitment_weight="high"), "commitment_weight: expected a number"),
    "NaN commitment_weight": (_edit_config(commitment_weight=float("nan")), "commitment_weight: must be"),
    "infinite entropy_temperature": (_edit_config(entropy_temperature=float("inf")), "entropy_temperature: must be"),
    "integer weights": (lambda f: _restore_weights(f, lambda s: s.update(
        {"quantizer.embedding": s["quantizer.embedding"].long()})), "quantizer.embedding is stored as I64"),
    "an extra tensor": (lambda f: _restore_weights(f, lambda s: s.update(
        {"smuggled": s["quantizer.embedding"][:1].clone()})), "has unexpected smuggled"),
    # issue 19: types without coercion, required keys, and nothing but CheckpointError
    "hidden_dim 16.0": (_edit_config(hidden_dim=16.0), "hidden_dim: expected an integer, got 16.0"),
    "quantizer missing": (lambda f: _drop_config_key(f, "quantizer"), "lacks quantizer"),
    "config.json nested 100,000 deep": (lambda f: (f / "config.json").write_text("[" * 100_000 + "]" * 100_000),
                                        "is nested too deeply"),
    "a 5,000-digit integer": (lambda f: (f / "config.json").write_text(
        (f / "config.json").read_text().replace('"codebook_size": 512', '"codebook_size": ' + "9" * 5000)),
        "holds a value that cannot be read"),
}


def _drop_config_key(folder: Path, key: str) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop(key)
    (folder / "config.json").write_text(json.dumps(cfg))

_LOAD_SCRIPT = r"""
import json, resource, sys
import vqexplore
from vqexplore.errors import CheckpointError
out = {}
for name, folder in json.loads(sys.argv[1]).items():
    try:
        vqexplore.load(folder)
        out[name] = ["loaded", ""]
    except CheckpointError as e:
        out[name] = ["CheckpointError", str(e)]
    except BaseException as e:
        out[name] = [type(e).__name__, str(e)[:300]]
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def _limited(address_space_gb: float = 8, file_size: int | None = None):
    """preexec_fn: cap the child's address space (a bug that allocates terabytes fails fast
    instead of swapping the test machine) and optionally its file size (a full disk)."""
    import resource

    def apply():
        limit = int(address_space_gb * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    return apply


def test_loading_checks_the_config_against_the_weights_before_allocating(tmp_path):
    """Item 2: every hostile checkpoint is one CheckpointError naming the key or tensor, and the
    loading process never grows (the 40M-code config took a demo server from 1.25 to 11 GB)."""
    import torch

    from vqexplore import VQModel

    folders = {}
    for i, (name, (change, _)) in enumerate(LOADING_CASES.items()):
        folder = tmp_path / f"case{i}"
        torch.manual_seed(0)
        VQModel(quantizer="vq", codebook_size=512, code_dim=64, hidden_dim=32, n_resblocks=1).save_pretrained(folder)
        change(folder)
        folders[name] = str(folder)
    proc = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, json.dumps(folders)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, preexec_fn=_limited(8),
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    for name, (_, phrase) in LOADING_CASES.items():
        kind, message = out[name]
        assert kind == "CheckpointError" and phrase in message, f"{name}: {kind}: {message}"
        assert "\n" not in message
    assert out["peak_rss_mb"] < 1500, f"the loader grew to {out['peak_rss_mb']:.0f} MB"


# ------------------------------------------------------------------------------------------
# The trainer: config, data and I/O problems are one `error:` line before work, exit 1 or 2
# ------------------------------------------------------------------------------------------

def trainer(*args: str, timeout: float = 300, file_size: int | None = None, cwd: Path = ROOT) -> tuple[int, str, float]:
    """``python -m trainer ARGS`` -> (exit code, stderr, peak RSS of the process in MB)."""
    from helpers.trainer_runs import env

    import threading

    proc = subprocess.Popen([sys.executable, "-m", "trainer", *args], cwd=cwd, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_limited(8, file_size))
    out: dict[str, str] = {}
    readers = [threading.Thread(target=lambda n=n, f=f: out.__setitem__(n, f.read())) for n, f in
               (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for r in readers:
        r.start()
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    # wait4: this child's own peak RSS (RUSAGE_CHILDREN would be the largest child of the whole session)
    _, status, usage = os.wait4(proc.pid, 0)
    killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join()
    proc.stdout.close()
    proc.stderr.close()
    stderr, peak = out["stderr"], usage.ru_maxrss / 1024
    return proc.returncode, stderr, peak


def assert_one_error_line(rc: int, stderr: str, expected_rc: int, phrase: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip() and "%|" not in line and not line.startswith("run ")]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert rc == expected_rc, (rc, stderr[-2000:])
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and phrase in errors[0], stderr[-2000:]


def _npz_folder(folder: Path, name: str, data) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"{name}.npz", data=data)
    return str(folder)


def _binary_yaml(tmp: Path) -> list[str]:
    (tmp / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    return ["--cfg", str(tmp / "binary.yaml")]


def _tiny(tmp: Path, *overrides: str) -> list[str]:
    from helpers.trainer_runs import write_config

    return ["--cfg", str(write_config(tmp / "tiny.yaml", "tiny", tmp / "runs")), *overrides]


TRAINER_CASES = {  # name -> (arguments made in a fresh tmp folder, exit code, phrase of the one error line)
    "binary YAML": (_binary_yaml, 2, "is not a text file"),
    "seed beyond 2^64": (lambda t: _tiny(t, f"train.seed={2 ** 64 + 1}"), 2, "train.seed: must lie in [0, 2^64)"),
    "codebook of 10^9 codes": (lambda t: _tiny(t, "model.codebook_size=1000000000"), 2,
                               "model.codebook_size: 1,000,000,000"),
    # LFQ holds no codebook tensor, so only the 2^31 rule itself stops 2^32 codes
    "LFQ of 2^32 codes": (lambda t: _tiny(t, "model.quantizer=lfq", f"model.codebook_size={2 ** 32}",
                                          "model.code_dim=32"), 2, "model.codebook_size: must be at most 2^31"),
    "hidden_dim 10^6": (lambda t: _tiny(t, "model.hidden_dim=1000000"), 2, "model.hidden_dim: 1,000,000 makes"),
    "n_resblocks 10^6": (lambda t: _tiny(t, "model.n_resblocks=1000000"), 2, "model.n_resblocks: must be at most 256"),
    "NaN commitment_weight": (lambda t: _tiny(t, "model.commitment_weight=.nan"), 2,
                              "model.commitment_weight: must be"),
    "0 x 0 training images": (lambda t: _tiny(t, "data.train=" + _npz_folder(
        t / "zero", "train_data_batch_1", np.zeros((32, 0), np.uint8))), 1, "0 x 0 pixels"),
    "empty validation npz": (lambda t: _tiny(t, "data.val=" + _npz_folder(
        t / "empty", "val_data", np.zeros((0, 3 * 8 * 8), np.uint8))), 1, "holds no images"),
    "unwritable out_dir": (lambda t: _tiny(t, f"out_dir={_unwritable(t)}"), 1, "check the permissions"),
    "eval --batch-size 0": (lambda t: ["eval", "--ckpt", str(ROOT / "checkpoints" / "vq-4096"), "--batch-size", "0"],
                            2, "--batch-size must be >= 1"),
    "eval --max-images 0": (lambda t: ["eval", "--ckpt", str(ROOT / "checkpoints" / "vq-4096"), "--max-images", "0"],
                            2, "--max-images must be >= 1"),
    "eval --out a folder": (lambda t: ["eval", "--ckpt", str(ROOT / "checkpoints" / "vq-4096"), "--out", str(t)],
                            2, "is a folder; give a file name"),
    # issue 19: every size that allocates is estimated before anything is allocated
    "data.size 20000": (lambda t: _tiny(t, "data.size=20000"), 2, "data.size: 20,000 needs at least"),
    "code_dim 4,000,000 x 500 codes": (lambda t: _tiny(t, "model.code_dim=4000000", "model.codebook_size=500"), 2,
                                       "model.code_dim: 4,000,000 needs at least"),
    "batch of 10^7": (lambda t: _tiny(t, "train.batch_size=10000000"), 2, "train.batch_size: 10,000,000 needs"),
    "10^6 data workers": (lambda t: _tiny(t, "data.num_workers=1000000"), 2, "data.num_workers: 1,000,000 needs"),
    # issue 19: strict config files
    "lr as a quoted string": (lambda t: _tiny(t, "train.lr='0.1'"), 2,
                              "train.lr: expected a number, got '0.1'; write the number without quotes"),
    "a key given twice": (lambda t: _yaml_file(t, "train:\n  lr: 0.001\n  steps: 5\n  lr: 0.1\n"), 2,
                          "key 'lr' is given twice (lines 2 and 4)"),
    "a section given twice": (lambda t: _yaml_file(t, "train:\n  steps: 5\nmodel: {}\ntrain:\n  steps: 6\n"), 2,
                              "key 'train' is given twice (lines 1 and 4)"),
    "an integer written as 16.0": (lambda t: _tiny(t, "model.hidden_dim=16.0"), 2,
                                   "model.hidden_dim: expected an integer, got 16.0"),
}


def _yaml_file(tmp: Path, text: str) -> list[str]:
    (tmp / "twice.yaml").write_text(text)
    return ["--cfg", str(tmp / "twice.yaml"), f"out_dir={tmp / 'runs'}"]


def _unwritable(tmp: Path) -> str:
    """A folder this process cannot create files in (root ignores permissions: /sys refuses)."""
    if os.geteuid() == 0:
        return "/sys/vqexplore-runs"
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)
    return str(tmp / "ro" / "runs")


@pytest.mark.parametrize("case", list(TRAINER_CASES))
def test_trainer_refuses_with_one_line_before_work(tmp_path, case):
    """Items 2, 10, 11: each bad config, data or argument is one `error:` line (exit 2 for a
    config, 1 otherwise), within a few hundred MB, and leaves no file behind."""
    make_args, expected_rc, phrase = TRAINER_CASES[case]
    args = make_args(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    start = time.perf_counter()
    rc, stderr, peak = trainer(*args)
    elapsed = time.perf_counter() - start
    assert_one_error_line(rc, stderr, expected_rc, phrase)
    if "needs at least" in phrase:  # refused from the estimate, before `import torch` (1.5 s): within a second
        # (the peak includes the forked pytest's pages before exec: it only shows nothing big was allocated)
        assert elapsed < 1.0 and peak < 1200 and "took " not in stderr, (elapsed, peak, stderr[-500:])
    assert peak < 2000, f"{case}: the trainer grew to {peak:.0f} MB"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "files were left behind"
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------
# Run folders: one trainer at a time, resume checks against the checkpoint, full disks
# ------------------------------------------------------------------------------------------

def _tiny_run(tmp: Path, steps: int = 6, **sections) -> tuple[Path, Path]:
    """A finished TINY run of ``steps`` steps: (its config file, its folder)."""
    from helpers.trainer_runs import write_config

    train = {"steps": steps, **sections.pop("train", {})}
    cfg = write_config(tmp / "tiny.yaml", "tiny", tmp / "runs", train=train, **sections)
    rc, stderr, _ = trainer("--cfg", str(cfg))
    assert rc == 0, stderr[-3000:]
    return cfg, tmp / "runs" / "tiny"


def test_one_trainer_per_run_folder(tmp_path):
    """Item 8: a second trainer on a run folder in use stops at once with one line naming the
    holder (the probe's two trainers both exited 0 with mixed K=512 / K=1024 checkpoints); the
    lock dies with its holder, even on SIGKILL."""
    import signal

    from helpers.trainer_runs import env, write_config

    cfg = write_config(tmp_path / "tiny.yaml", "tiny", tmp_path / "runs",
                       train={"steps": 100000, "val_every": 0, "ckpt_every": 1000})
    lock = tmp_path / "runs" / "tiny" / ".lock"
    first = subprocess.Popen([sys.executable, "-m", "trainer", "--cfg", str(cfg)], cwd=ROOT, env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip()):
            assert first.poll() is None, first.stderr.read()[-3000:]
            time.sleep(0.2)
        for args in (["--cfg", str(cfg), "model.codebook_size=64"], ["--cfg", str(cfg), "--resume"]):
            rc, stderr, _ = trainer(*args, timeout=120)
            assert first.poll() is None, "the first trainer stopped"
            assert_one_error_line(rc, stderr, 1, f"is in use by another trainer (pid {first.pid} on ")
            assert "python -m trainer --cfg" in stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
        first.stderr.close()
    rc, stderr, _ = trainer("--cfg", str(cfg), "--resume", "train.steps=4")
    assert rc == 0, stderr[-3000:]
    assert not lock.exists()


RESUME_CASES = {  # name -> (change before resuming, override given to --resume, phrase of the one error line)
    "other lr, config.yaml deleted": ("delete config.yaml", "train.lr=0.002", "train.lr: differs from the run"),
    "other commitment_weight, config.yaml deleted": (
        "delete config.yaml", "model.commitment_weight=0.5", "model.commitment_weight: differs from the run"),
    "other commitment_weight, an older checkpoint without a recorded config": (
        "old checkpoint", "model.commitment_weight=0.5", "model.commitment_weight: differs from the run"),
    "other commitment_weight, config.yaml edited to agree": (
        "config.yaml agrees", "model.commitment_weight=0.5", "model.commitment_weight: differs from the run"),
    "the data folder gained images": ("more images", "",
                                      "data.train: now gives 3 batches per epoch, the run being resumed had 1"),
    "corrupt config.yaml, an older checkpoint": ("corrupt config.yaml, old checkpoint", "", "config.yaml is corrupt"),
}


def _image_folder(folder: Path, n: int, start: int = 0) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        Image.fromarray(photo(24, 24, seed=i)).save(folder / f"{i:03d}.png")
    return str(folder)


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_checks_the_newest_checkpoints_own_config(tmp_path, case):
    """Item 9: --resume compares with what the newest checkpoint records (trainer_state.json,
    config.json, its data position), not only config.yaml; a mismatch is one error line and the
    run folder is left as it was."""
    import yaml

    change, override, phrase = RESUME_CASES[case]
    data = {"train": _image_folder(tmp_path / "photos", 16), "val": "builtin", "size": 16}
    cfg, run = _tiny_run(tmp_path, data=data)
    newest = sorted((run / "checkpoints").iterdir())[-1]
    if change == "delete config.yaml":
        (run / "config.yaml").unlink()
    elif change.endswith("old checkpoint"):
        for ckpt in (run / "checkpoints").iterdir():
            state = json.loads((ckpt / "trainer_state.json").read_text())
            state.pop("config", None)
            (ckpt / "trainer_state.json").write_text(json.dumps(state))
        (run / "config.yaml").write_bytes(b"\x00\xff garbage" if "corrupt" in change else b"")
        if "corrupt" not in change:
            (run / "config.yaml").unlink()
    elif change == "config.yaml agrees":
        saved = yaml.safe_load((run / "config.yaml").read_text())
        saved["model"]["commitment_weight"] = 0.5
        (run / "config.yaml").write_text(yaml.safe_dump(saved))
    elif change == "more images":
        _image_folder(tmp_path / "photos", 16, start=16)
    before = {p: p.read_bytes() for p in newest.rglob("*") if p.is_file()}
    rc, stderr, _ = trainer("--cfg", str(cfg), "--resume", "train.steps=12", *([override] if override else []))
    assert_one_error_line(rc, stderr, 1 if "corrupt" in change else 2, phrase)
    assert [p.name for p in sorted((run / "checkpoints").iterdir())][-1] == newest.name
    assert {p: p.read_bytes() for p in newest.rglob("*") if p.is_file()} == before


def test_resume_with_a_corrupt_config_yaml_uses_the_checkpoints_config(tmp_path):
    """Item 10: config.yaml is a copy; the checkpoint's own record is what resuming needs."""
    import yaml

    cfg, run = _tiny_run(tmp_path)
    (run / "config.yaml").write_bytes(b"\x00\xff\xfe not yaml")
    rc, stderr, _ = trainer("--cfg", str(cfg), "--resume", "train.steps=9")
    assert rc == 0, stderr[-3000:]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["steps"] == 9


def test_full_disk_is_one_error_line_and_loses_nothing(tmp_path):
    """Item 10: writing a checkpoint fails (a file size limit plays the full disk): one `error:`
    line, exit 1, no temporary folder left, the previous checkpoint intact, and a later resume
    finishes the run."""
    import vqexplore

    cfg, run = _tiny_run(tmp_path)
    step6 = run / "checkpoints" / "step-00000006"
    before = {p: p.read_bytes() for p in step6.rglob("*") if p.is_file()}
    rc, stderr, _ = trainer("--cfg", str(cfg), "--resume", "train.steps=12", file_size=100_000)
    assert_one_error_line(rc, stderr, 1, "File too large")
    assert "raise the file size limit" in stderr
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert {p: p.read_bytes() for p in step6.rglob("*") if p.is_file()} == before
    vqexplore.load(step6)
    rc, stderr, _ = trainer("--cfg", str(cfg), "--resume", "train.steps=12")
    assert rc == 0, stderr[-3000:]
    assert (run / "checkpoints" / "step-00000012").is_dir()
