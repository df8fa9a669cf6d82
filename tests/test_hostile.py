"""The cases of a hostile probe (issue 11), kept as tables so that a new feature cannot reopen them:
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

from test_gradio_app import APP, ROOT, free_port, make_checkpoints, photo, stop, wait_for_http

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
    port = free_port()
    env = dict(os.environ, VQEXPLORE_CHECKPOINTS=str(tmp / "checkpoints"), VQEXPLORE_HUB_REPOS="",
               GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False",
               GRADIO_TEMP_DIR=str(upload), HF_HUB_OFFLINE="1", MPLCONFIGDIR=str(tmp / "mpl"),
               PYTHONUNBUFFERED="1", VQEXPLORE_MAX_FILE_SIZE="1mb", VQEXPLORE_FILE_TTL=str(FILE_TTL))
    log_path = tmp / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(APP)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_http(url + "config", proc, log_path)
        yield dict(url=url, upload=upload, outside=outside, names=list(checkpoints), proc=proc, log=log_path)
    finally:
        stop(proc)


def gray_checkpoint(folder: Path) -> None:
    """A valid checkpoint of a 1-channel tokenizer: the apps, which show RGB images, cannot use it."""
    from vqexplore import VQModel

    VQModel(quantizer="vq", codebook_size=16, code_dim=4, hidden_dim=8, n_resblocks=1, in_channels=1).save_pretrained(folder)


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
    return {
        "an image outside the upload folder": {"path": str(outside / "secret.png")},
        "a text file": {"path": str(outside / "notes.txt")},
        "a folder": {"path": str(outside)},
        "a missing file": {"path": str(outside / "missing.png")},
        "system file": {"path": "/etc/passwd"},
        "relative path": {"path": "checkpoints/vq-512/config.json"},
        "traversal out of the upload folder": {"path": str(upload / ".." / "server-files" / "secret.png")},
        "symlink in the upload folder": {"path": str(link)},
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


@pytest.mark.parametrize("typed", ["checkpoints/vq-512", "tests/test_hub.py", "app/views", "nobody/nothing"])
def test_demo_typed_ids_are_hub_ids_only(hostile_server, typed):
    """Item 3: a typed id never loads a server folder (``checkpoints/vq-512`` exists in the
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
    for key, env in (("checkpoints", "VQEXPLORE_CHECKPOINTS"), ("runs", "VQEXPLORE_RUNS"), ("cache", "VQEXPLORE_CACHE_DIR")):
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
    cases = {
        "a valid checkpoint outside": str(outside / "vq-64"),
        "a system folder": "/etc",
        "a system file": "/etc/passwd",
        "a missing path": "/no/such/folder",
        "traversal out of a root": str(dashboard_tree["checkpoints"] / ".." / ".." / "elsewhere" / "vq-64"),
        "home": "~",
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
