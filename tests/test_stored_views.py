"""Views computed once: ``trainer export`` and ``trainer eval`` store the dashboard's default codebook
projection and the default protocol's evaluation (usage counts, PSNR, SSIM) beside the checkpoint, and
the dashboard reads them instead of computing; a stale file (other weights), one of other parameters or
another protocol, and a corrupt file are ignored and the views computed, never a traceback.

The dashboard runs through Streamlit's AppTest on real tiny checkpoints with an empty cache folder. To
tell "read" from "computed", the stored files are rewritten (their records of the weights and parameters
kept) with marker values no computation produces: a layout on a straight line and made-up counts."""
from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.dashboard import APP, FOLDER_VARS, open_page
from vqexplore import VQModel
from vqexplore.projection import default_params, stored_projection
from vqexplore.protocol import Protocol, cached_evaluation, evaluate_protocol, stored_evaluation
from vqexplore.runlayout import CheckpointFiles

K = 64
MARK_XY = np.stack([np.arange(K) * 1.5 + 3.0, -np.arange(K) * 0.25], 1).astype(np.float32)
MARK_COUNTS = (np.arange(K) * 7 % 23).astype(np.int64)  # code 0 dead, the others made up


def tiny(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = VQModel(quantizer="vq", codebook_size=K, code_dim=4, hidden_dim=8, n_resblocks=1)
    with torch.no_grad():
        model.quantizer.embedding.normal_(0, 0.3)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A trained-looking tiny checkpoint exported twice: with its views (the default) and ``--no-views``."""
    from trainer.export import export_checkpoint

    root = tmp_path_factory.mktemp("views")
    src = tiny(root / "src", seed=0)
    mp = pytest.MonkeyPatch()
    mp.setenv("VQEXPLORE_CACHE_DIR", str(root / "export-cache"))
    try:
        export_checkpoint(str(src), str(root / "viewed"))
        export_checkpoint(str(src), str(root / "plain"), views=False)
    finally:
        mp.undo()
    return root


def _dashboard(tmp_path: Path, ckpt: Path, monkeypatch, prepare=None):
    """AppTest of the dashboard serving only a copy of ``ckpt`` (as checkpoints/tiny; ``prepare(copy)``
    runs first), with an empty cache."""
    from streamlit.testing.v1 import AppTest

    served = tmp_path / "served"
    shutil.copytree(ckpt, served / "tiny")
    if prepare is not None:
        prepare(served / "tiny")
    for key, value in (("checkpoints", served), ("runs", tmp_path / "no-runs"), ("cache", tmp_path / "dash-cache")):
        monkeypatch.setenv(FOLDER_VARS[key], str(value))
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.run()
    return at, served / "tiny"


def _decode(values) -> np.ndarray:
    if isinstance(values, dict):  # plotly's typed array: {"dtype": "f4", "bdata": base64}
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values)


def shown_points(at) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(xy (K, 2), counts (K,)) the embedding chart draws per code id, and the page's captions."""
    def charts(node):
        for child in getattr(node, "children", {}).values():
            if getattr(child, "type", None) == "plotly_chart":
                yield child
            yield from charts(child)

    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    [chart] = list(charts(at.main))
    xy, counts = np.full((K, 2), np.nan, np.float32), np.full(K, -1, np.int64)
    for trace in json.loads(chart.proto.spec)["data"]:
        data = _decode(trace["customdata"]).reshape(-1, 2)
        ids = data[:, 0].astype(int)
        xy[ids, 0], xy[ids, 1], counts[ids] = _decode(trace["x"]), _decode(trace["y"]), data[:, 1]
    assert not np.isnan(xy).any() and (counts >= 0).all()
    return xy, counts, [c.value for c in at.caption]


def mark(ckpt: Path) -> None:
    """Rewrite the stored views with the marker values, keeping what they record (weights, parameters)."""
    files = CheckpointFiles(ckpt)
    with np.load(files.projection) as f:
        meta = str(f["meta"])
    np.savez(files.projection, codes=MARK_XY, meta=np.array(meta))
    with np.load(files.evaluation) as f:
        meta = str(f["meta"])
    np.savez(files.evaluation, counts=MARK_COUNTS, meta=np.array(meta))


def test_export_stores_the_views_of_the_exported_weights(exported):
    viewed, plain = exported / "viewed", exported / "plain"
    assert CheckpointFiles(viewed).projection.is_file() and CheckpointFiles(viewed).evaluation.is_file()
    assert not CheckpointFiles(plain).projection.exists() and not CheckpointFiles(plain).evaluation.exists()
    proj = stored_projection(viewed, **default_params(K))
    assert proj is not None and proj.stored and proj.method == "umap" and proj.codes.shape == (K, 2)
    protocol, metrics, counts = stored_evaluation(viewed)
    assert protocol == Protocol.default(64)
    truth = evaluate_protocol(VQModel.from_pretrained(viewed), Protocol.default(64))
    assert np.array_equal(counts, truth.counts) and metrics["psnr"] == pytest.approx(truth.metrics["psnr"], abs=1e-6)
    # other parameters are not what is stored
    assert stored_projection(viewed, **{**default_params(K), "method": "pca"}) is None
    assert stored_projection(viewed, **{**default_params(K), "dims": 3}) is None
    from trainer.cli import _export_parser

    assert _export_parser().parse_args(["--ckpt", "a", "--to", "b", "--no-views"]).no_views


def test_dashboard_reads_the_stored_views_instead_of_computing(exported, tmp_path, monkeypatch):
    at, served = _dashboard(tmp_path, exported / "viewed", monkeypatch, prepare=mark)
    open_page(at, "code_embeddings")
    xy, counts, captions = shown_points(at)
    assert np.array_equal(xy, MARK_XY), "the layout was computed, not read from beside the checkpoint"
    assert np.array_equal(counts, MARK_COUNTS), "the usage counts were measured, not read"
    assert any("UMAP stored beside the checkpoint" in c for c in captions), captions
    # nothing was computed into the (empty) cache
    assert not list((tmp_path / "dash-cache").rglob("*.npz")), list((tmp_path / "dash-cache").rglob("*"))


def test_stale_views_are_never_used(exported, tmp_path, monkeypatch):
    """New weights in the folder (same names, views left from the old ones): computed again."""
    new = tiny(tmp_path / "new", seed=1)

    def stale(folder: Path) -> None:
        mark(folder)
        shutil.copy2(new / "model.safetensors", folder / "model.safetensors")

    at, served = _dashboard(tmp_path, exported / "viewed", monkeypatch, prepare=stale)
    assert stored_evaluation(served) is None and stored_projection(served, **default_params(K)) is None
    open_page(at, "code_embeddings")
    xy, counts, captions = shown_points(at)
    assert not np.allclose(xy[:, 1], -np.arange(K) * 0.25), "a stale stored layout was shown"
    truth = evaluate_protocol(VQModel.from_pretrained(new), Protocol.default(64)).counts
    assert np.array_equal(counts, truth), "stale stored counts were shown"
    assert any("UMAP computed" in c for c in captions), captions


def test_corrupt_views_are_ignored_without_a_traceback(exported, tmp_path, monkeypatch):
    def corrupt(folder: Path) -> None:
        files = CheckpointFiles(folder)
        files.projection.write_bytes(b"PK\x03\x04 not really a zip")
        files.evaluation.write_bytes(files.evaluation.read_bytes()[:40])  # truncated

    at, served = _dashboard(tmp_path, exported / "viewed", monkeypatch, prepare=corrupt)
    assert stored_evaluation(served) is None and stored_projection(served, **default_params(K)) is None
    open_page(at, "code_embeddings")
    _, counts, captions = shown_points(at)  # no error, no exception
    truth = evaluate_protocol(VQModel.from_pretrained(served), Protocol.default(64)).counts
    assert np.array_equal(counts, truth) and any("UMAP computed" in c for c in captions), captions


def test_other_parameters_and_protocols_are_computed(exported, tmp_path, monkeypatch):
    at, served = _dashboard(tmp_path, exported / "viewed", monkeypatch, prepare=mark)
    at.session_state["proj_method"] = "pca"
    open_page(at, "code_embeddings")
    xy, counts, captions = shown_points(at)
    assert not np.allclose(xy[:, 1], -np.arange(K) * 0.25) and any("PCA computed" in c for c in captions)
    assert np.array_equal(counts, MARK_COUNTS)  # the protocol did not change: its stored counts serve
    # another protocol: measured, the stored default one is not taken for it
    model = VQModel.from_pretrained(served)
    other = cached_evaluation(served, model, Protocol.builtin(32, count=8), cache=tmp_path / "lib-cache")
    assert not other.from_cache and not np.array_equal(other.counts, MARK_COUNTS)
    same = cached_evaluation(served, model, Protocol.default(64), cache=tmp_path / "lib-cache")
    assert same.from_cache and np.array_equal(same.counts, MARK_COUNTS)


def test_eval_stores_the_views_too(tmp_path, monkeypatch):
    """``trainer eval`` under the default protocol: its counts are the stored ones; with --out nothing is
    written beside the checkpoint."""
    from trainer.evaluate import evaluate_checkpoint

    monkeypatch.setenv("VQEXPLORE_CACHE_DIR", str(tmp_path / "cache"))
    ckpt = tiny(tmp_path / "ckpt", seed=2)
    metrics, _ = evaluate_checkpoint(str(ckpt), quiet=True)
    protocol, stored, counts = stored_evaluation(ckpt)
    assert protocol == Protocol.default(64) and counts.tolist() == metrics["code_counts"]
    assert stored_projection(ckpt, **default_params(K)) is not None
    other = tiny(tmp_path / "other", seed=3)
    evaluate_checkpoint(str(other), out=str(tmp_path / "m.json"), quiet=True)
    assert not CheckpointFiles(other).evaluation.exists() and not CheckpointFiles(other).projection.exists()


def test_a_stored_evaluation_without_a_number_the_pages_read_is_ignored(exported, tmp_path):
    """Readable and made from these weights, but missing what the pages read (an older or hand-edited
    file): ignored like a corrupt one, not shown as an error."""
    folder = tmp_path / "ckpt"
    shutil.copytree(exported / "viewed", folder)
    files = CheckpointFiles(folder)
    with np.load(files.evaluation) as f:
        meta, counts = json.loads(str(f["meta"])), f["counts"]
    assert stored_evaluation(folder) is not None
    del meta["metrics"]["num_images"]
    np.savez(files.evaluation, counts=counts, meta=np.array(json.dumps(meta)))
    assert stored_evaluation(folder) is None
