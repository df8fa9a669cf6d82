"""``python -m trainer tokenize`` (real image files, a real interruption and resume) and
``python -m trainer export --projector`` read back by TensorBoard's own projector plugin (a real
``tensorboard`` server on a free port)."""
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.cli import main
from vqexplore import VQModel, analysis
from vqexplore.data import make_dataset, validation_batch

REPO = Path(__file__).resolve().parent.parent


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = VQModel(quantizer="vq", codebook_size=64, code_dim=4, hidden_dim=8, n_resblocks=1)
    with torch.no_grad():
        model.quantizer.embedding.normal_(0, 0.3)
    path = tmp_path_factory.mktemp("tok") / "vq-64"
    model.save_pretrained(path)
    return path


@pytest.fixture()
def photos(tmp_path):
    """A folder of 30 real image files (PNG and JPEG, various sizes) in two subfolders."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for i in range(30):
        h, w = int(rng.integers(24, 60)), int(rng.integers(24, 60))
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([(x * (i + 3)) % 256, (y * 7 + i * 20) % 256, ((x + y) * 5) % 256], -1).astype(np.uint8)
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(sub / f"img{i:02d}.{'png' if i % 3 else 'jpg'}")
    return root


def _expected(ckpt, data, split, size=32):
    model = VQModel.from_pretrained(ckpt).eval()
    ds = make_dataset(data, split, size, in_memory=False)
    with torch.no_grad():
        return model.encode(torch.stack([ds[i] for i in range(len(ds))])).numpy()


def test_tokenize_a_folder(capsys, ckpt, photos, tmp_path):
    out = tmp_path / "tokens"
    rc, stdout, err = _run(capsys, "tokenize", "--ckpt", ckpt, "--data", photos, "--out", out, "--size", 32,
                           "--batch-size", 8, "--workers", 0)
    assert rc == 0, err
    assert "tokenized" in stdout and "8x8 tokens, uint16" in stdout
    assert "tokenize" in err and "img/s" in err  # the progress bar
    tokens = np.load(out / "tokens.npy", mmap_mode="r")
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
    index = json.loads((out / "index.json").read_text())
    ds = make_dataset(photos, "train", 32, in_memory=False)
    assert tokens.shape == (len(ds), 8, 8) and index["num_images"] == len(ds)
    np.testing.assert_array_equal(tokens, _expected(ckpt, photos, "train"))
    assert index["image_ids"] == [os.fsdecode(bytes(f)) for f in ds.files]
    assert all((photos / i).is_file() for i in index["image_ids"])
    assert index["checkpoint_sha256"] == hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()
    assert index["complete"] and index["grid"] == [8, 8] and index["codebook_size"] == 64
    assert not (out / "progress.json").exists()
    # Rerunning a complete job does nothing; the same folder for another checkpoint is refused.
    rc, _, err = _run(capsys, "tokenize", "--ckpt", ckpt, "--data", photos, "--out", out, "--size", 32, "--workers", 0)
    assert rc == 0 and "already complete" in err
    other = tmp_path / "other"
    VQModel(quantizer="vq", codebook_size=64, code_dim=4, hidden_dim=8, n_resblocks=1).save_pretrained(other)
    rc, _, err = _run(capsys, "tokenize", "--ckpt", other, "--data", photos, "--out", out, "--size", 32)
    assert rc == 1 and err.startswith("error: ") and "checkpoint_sha256 differs" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("workers", [0, 1])
def test_tokenize_stops_on_a_bad_file_and_resumes(capsys, ckpt, photos, tmp_path, workers):
    ds = make_dataset(photos, "val", 32, in_memory=False)
    files = [photos / os.fsdecode(bytes(f)) for f in make_dataset(photos, "train", 32, in_memory=False).files]
    bad = files[13]
    good_bytes = bad.read_bytes()
    bad.write_bytes(b"not an image")
    out = tmp_path / "tokens"
    args = ["tokenize", "--ckpt", ckpt, "--data", photos, "--out", out, "--size", 32, "--batch-size", 4,
            "--workers", workers, "--no-progress"]
    rc, _, err = _run(capsys, *args)
    assert rc == 1 and err.startswith("error: ") and bad.name in err and len(err.strip().splitlines()) == 1, err
    done = json.loads((out / "progress.json").read_text())["done"]
    assert done == 12  # three full batches before the batch holding the bad file
    assert not json.loads((out / "index.json").read_text())["complete"]
    bad.write_bytes(good_bytes)
    rc, _, err = _run(capsys, *args)
    assert rc == 0 and "resuming after 12 of" in err
    np.testing.assert_array_equal(np.load(out / "tokens.npy"), _expected(ckpt, photos, "train"))
    assert json.loads((out / "index.json").read_text())["complete"]
    assert len(ds) >= 1


def test_tokenize_bad_input(capsys, ckpt, tmp_path):
    rc, _, err = _run(capsys, "tokenize", "--ckpt", tmp_path / "missing", "--data", "builtin", "--out", tmp_path / "o")
    assert rc == 1 and "does not exist" in err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    rc, _, err = _run(capsys, "tokenize", "--ckpt", ckpt, "--data", "builtin", "--out", tmp_path / "busy",
                      "--max-images", 4)
    assert rc == 1 and "holds other files" in err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    rc, _, err = _run(capsys, "tokenize", "--ckpt", ckpt, "--data", "builtin", "--out", tmp_path / "o", "--size", 30,
                      "--max-images", 4)
    assert rc == 1 and "multiple of 4" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def test_projector_export_is_read_by_tensorboard(capsys, ckpt, tmp_path):
    out = tmp_path / "projector"
    rc, stdout, err = _run(capsys, "export", "--projector", "--ckpt", ckpt, "--out", out, "--size", 32, "--images", 16)
    assert rc == 0, err
    assert f"tensorboard --logdir {out}" in stdout
    model = VQModel.from_pretrained(ckpt).eval()
    counts = analysis.usage_counts(model, validation_batch(n=16, size=32))
    port = _free_port()
    log = open(tmp_path / "tb.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "tensorboard"), "--logdir", str(out), "--port",
                             str(port),
                             "--host", "127.0.0.1", "--load_fast", "false"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/data/plugin/projector"
    try:
        deadline = time.time() + 120
        while True:
            try:
                runs = json.loads(_get(f"{base}/runs"))
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail("tensorboard did not start: " + (tmp_path / "tb.log").read_text()[-2000:])
                time.sleep(0.5)
        assert runs == ["."]
        info = json.loads(_get(f"{base}/info?run=."))
        [emb] = info["embeddings"]
        assert emb["tensorName"] == "codebook vq-64" and emb["sprite"]["singleImageDim"] == [64, 64]
        name = urllib.parse.quote(emb["tensorName"])
        tensor = np.frombuffer(_get(f"{base}/tensor?run=.&name={name}"), dtype=np.float32).reshape(64, 4)
        np.testing.assert_allclose(tensor, model.codebook_vectors().detach().numpy(), rtol=1e-6, atol=1e-7)
        meta = _get(f"{base}/metadata?run=.&name={name}").decode().splitlines()
        assert meta[0] == "code\tcount\tshare\tused\tquantizer" and len(meta) == 65
        assert [int(line.split("\t")[1]) for line in meta[1:]] == counts.tolist()
        sprite = _get(f"{base}/sprite_image?run=.&name={name}")
        import io

        im = Image.open(io.BytesIO(sprite))
        assert im.format == "PNG" and im.size == (8 * 64, 8 * 64)
        tile = np.asarray(im)[:64:4, 64:128:4]  # code 1, back to 16 px
        np.testing.assert_array_equal(tile, analysis.decoded_tile(model, 1))
        listing = json.loads(_get(f"http://127.0.0.1:{port}/data/plugins_listing"))
        assert "projector" in listing
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
    # The folder may only hold projector files: anything else is refused.
    (out / "notes.txt").write_text("x")
    rc, _, err = _run(capsys, "export", "--projector", "--ckpt", ckpt, "--out", out)
    assert rc == 1 and "holds other files" in err
    rc, _, err = _run(capsys, "export", "--projector", "--ckpt", ckpt)
    assert rc == 2 and "needs --out" in err
