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
        yield dict(url=url, upload=upload, outside=outside, names=list(checkpoints), proc=proc, log=log_path)
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
    for key, env in (("checkpoints", "VQEXPLORE_CHECKPOINTS"), ("runs", "VQEXPLORE_RUNS"),
                     ("cache", "VQEXPLORE_CACHE_DIR")):
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
}

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

    with subprocess.Popen([sys.executable, "-m", "trainer", *args], cwd=cwd, env=env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, preexec_fn=_limited(8, file_size)) as proc:
        _, stderr = proc.communicate(timeout=timeout)
        # communicate() has reaped it: its peak RSS is the children's maximum so far, which the
        # fixed, small processes of this module keep meaningful
        import resource

        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
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
}


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
    rc, stderr, peak = trainer(*args)
    assert_one_error_line(rc, stderr, expected_rc, phrase)
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
