"""The Streamlit dashboard through streamlit.testing.v1.AppTest: every page on tiny checkpoints
(and on the demo checkpoints in checkpoints/ when they exist), checkpoint switching, bad input."""
import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from helpers.dashboard import APP, PAGES, dashboard_env, open_page
from vqexplore import VQModel

REPO = Path(__file__).resolve().parent.parent
TINY = {
    "vq-64": dict(quantizer="vq", codebook_size=64, code_dim=4),
    "vq-l2-128": dict(quantizer="vq", codebook_size=128, code_dim=4, l2_norm=True),
    "fsq-5-4-3": dict(quantizer="fsq", levels=[5, 4, 3]),
    "simvq-64": dict(quantizer="simvq", codebook_size=64, code_dim=4),
}
RUN_STEPS = (10, 20, 30)


def build_fixture_tree(root: Path) -> dict:
    """checkpoints/<4 tiny models>, runs/tiny-run/ (3 checkpoints + metrics.jsonl), cache/."""
    torch.manual_seed(0)
    ckpts, runs = root / "checkpoints", root / "runs"
    for name, cfg in TINY.items():
        model = VQModel(**cfg, hidden_dim=8, n_resblocks=1)
        if cfg["quantizer"] == "vq":
            with torch.no_grad():
                model.quantizer.embedding.normal_(0, 0.3)
        model.save_pretrained(ckpts / name)
    (ckpts / "vq-64" / "metrics.json").write_text(json.dumps(
        {"usage": 0.5, "perplexity": 20.0, "dead_codes": 32, "codebook_size": 64, "psnr": 20.5, "ssim": 0.6,
         "lpips": None, "rfid": None, "num_images": 100}))
    run = runs / "tiny-run"
    for step in RUN_STEPS:
        VQModel(**TINY["vq-64"], hidden_dim=8, n_resblocks=1).save_pretrained(run / "checkpoints" / f"step-{step:08d}")
    write_metrics(run, range(1, 31))
    return {"checkpoints": ckpts, "runs": runs, "cache": root / "cache", "run": run}


def write_metrics(run: Path, steps, mode: str = "w") -> None:
    with open(run / "metrics.jsonl", mode) as f:
        for step in steps:
            f.write(json.dumps({"step": step, "split": "train", "loss": 1.0 / step, "recon_loss": 0.8 / step,
                                "usage": min(1.0, step / 30), "perplexity": 2.0 * step, "lr": 4e-4,
                                "time": time.time()}) + "\n")
            if step % 10 == 0:
                f.write(json.dumps({"step": step, "split": "val", "usage": 0.5, "perplexity": 10.0,
                                    "psnr": 15 + step / 10, "ssim": 0.5}) + "\n")


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    paths = build_fixture_tree(tmp_path_factory.mktemp("dash"))
    with dashboard_env(paths):
        yield paths


def _app():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=180)
    at.run()
    return at


def _open(at, page: str):
    return open_page(at, page)


def _count(node, element_type: str) -> int:
    """Elements of one type in an AppTest tree (e.g. "plotly_chart", which AppTest does not
    wrap when the chart has selections, or "image")."""
    found = 0
    for child in getattr(node, "children", {}).values():
        found += (getattr(child, "type", None) == element_type) + _count(child, element_type)
    return found


def _charts(node) -> int:
    return _count(node, "plotly_chart")


def _ok(at, title: str) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert [t.value for t in at.title] == [title]


def _check_page(at, page: str, n_selected: int) -> None:
    _ok(at, PAGES[page])
    assert at.sidebar.multiselect(key="w_selected_sources") is not None
    if page == "compare":
        assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == n_selected
        assert list(at.dataframe[0].value.columns)[:3] == ["checkpoint", "quantizer", "levels"]
        assert "remedy" in at.dataframe[0].value.columns
        # usage curves, and (two or more checkpoints) usage against PSNR grouped by remedy
        assert _charts(at.main) == (2 if n_selected > 1 else 1)
    elif page == "codebook_usage":
        assert [m.label for m in at.metric] == ["Codebook usage", "Perplexity", "Dead codes", "Normalised entropy"]
        assert _charts(at.main) >= 2
    elif page == "codebook_health":
        assert [m.label for m in at.metric] == ["Dead codes", "far from the data", "outcompeted",
                                                "Norm spread (std/mean)"]
        assert any("Diagnosis" in h.value for h in at.subheader) and len(at.markdown) >= 1
        assert _charts(at.main) >= 1
    elif page == "code_embeddings":
        assert _charts(at.main) == 1
        assert any(("UMAP" in c.value or "PCA" in c.value) and "computed" in c.value for c in at.caption)
    elif page == "reconstructions":
        assert _count(at.main, "iframe") == 4 * n_selected  # 4 validation images x every selected checkpoint
        assert len(at.dataframe) == 2
    elif page == "code_inspector":
        assert at.number_input(key="inspector_code") is not None
        assert _count(at.main, "image") == 2  # decoded tile + patches
        assert _charts(at.main) == (0 if at.radio(key="inspector_pick").value == "no chart" else 1)
    elif page == "training":
        assert _charts(at.main) >= 1  # one chart per metric group
        assert any("last step" in c.value for c in at.caption)
    elif page == "aligned_codes":
        assert at.selectbox(key="align_a") is not None and at.selectbox(key="align_b") is not None


def test_every_page_on_tiny_checkpoints(tree):
    at = _app()
    # a fresh session selects the newest run first (tiny-run), then the checkpoints
    selected = at.sidebar.multiselect(key="w_selected_sources").value
    assert selected[0] == "run: tiny-run" and sorted(selected[1:]) == sorted(TINY)
    _check_page(at, "compare", len(TINY) + 1)
    for page in PAGES:
        _check_page(_open(at, page), page, len(TINY) + 1)


@pytest.mark.skipif(not any((REPO / "checkpoints").glob("*/model.safetensors")),
                    reason="no demo checkpoints in checkpoints/ yet (the trainer writes them)")
def test_every_page_on_demo_checkpoints(tree, monkeypatch):
    monkeypatch.setenv("VQEXPLORE_CHECKPOINTS", str(REPO / "checkpoints"))
    before = tree_digest(REPO / "checkpoints")
    at = _app()
    n = len(list((REPO / "checkpoints").glob("*/model.safetensors")))
    at.sidebar.multiselect(key="w_selected_sources").set_value([p.parent.name for p in sorted(
        (REPO / "checkpoints").glob("*/model.safetensors"))]).run()
    at.sidebar.selectbox(key="w_protocol_source").select("builtin").run()
    at.sidebar.selectbox(key="w_sample_size").select(16).run()  # keep it quick on 2 cores
    at.sidebar.selectbox(key="w_image_size").select(32).run()  # quicker than the demos' 64 (any multiple of 4)
    assert any("Measured under: built-in photos" in c.value and "16 images" in c.value for c in at.caption)
    # PCA here: a 16,384-code UMAP is what bench/dashboard.py times; the UMAP path of the page
    # runs in test_every_page_on_tiny_checkpoints.
    at.session_state["proj_method"] = "pca"
    for page in PAGES:
        _check_page(_open(at, page), page, n)
    assert tree_digest(REPO / "checkpoints") == before


def test_switch_checkpoint_and_code(tree):
    at = _open(_app(), "codebook_usage")
    first = at.caption[1].value  # caption 0: the protocol the page is measured under
    at.selectbox(key="focus_select").select("vq-l2-128").run()
    _ok(at, "Codebook usage")
    assert "K=128" in at.caption[1].value and at.caption[1].value != first
    assert at.metric[2].value.endswith("/ 128")
    # The choice follows to the other single-checkpoint pages.
    _open(at, "code_inspector")
    _ok(at, "Code inspector")
    assert at.selectbox(key="focus_select").value == "vq-l2-128"
    # A dead code shows a clear note instead of patches.
    at.selectbox(key="focus_select").select("vq-64").run()
    from vqexplore import load
    from vqexplore.protocol import Protocol, evaluate_protocol

    # the counts under the page's protocol (the default: the held-out photos)
    counts = evaluate_protocol(load(tree["checkpoints"] / "vq-64"), Protocol.heldout_photos(64)).counts
    dead = int((counts == 0).nonzero()[0][0])
    at.number_input(key="inspector_code").set_value(dead).run()
    _ok(at, "Code inspector")
    assert any(f"Code {dead} is dead" in w.value for w in at.warning)
    used = int(counts.argmax())
    at.number_input(key="inspector_code").set_value(used).run()
    assert any(f"Used by **{int(counts[used]):,}**" in m.value for m in at.markdown)


def test_run_folder_usage_over_steps_and_training_refresh(tree):
    at = _app()
    at.sidebar.multiselect(key="w_selected_sources").set_value(["run: tiny-run"]).run()
    _open(at, "codebook_usage")
    _ok(at, "Codebook usage")
    assert at.selectbox(key="focus_select").value == "run: tiny-run"
    assert _charts(at.main) == 3  # heatmap, histogram, codes x steps
    _open(at, "training")
    _ok(at, "Training")
    assert any("last step 30" in c.value for c in at.caption)
    write_metrics(tree["run"], range(31, 41), mode="a")
    at.run()
    assert any("last step 40" in c.value for c in at.caption)
    write_metrics(tree["run"], range(1, 31))  # restore for other tests


@pytest.mark.parametrize("kind", ["missing", "not_a_checkpoint", "truncated", "file", "hub_offline"])
def test_bad_sources_show_one_error_and_change_nothing(tree, tmp_path, monkeypatch, kind):
    if kind == "missing":
        text, expect = str(tmp_path / "nope"), "does not exist"
    elif kind == "not_a_checkpoint":
        (tmp_path / "folder").mkdir()
        (tmp_path / "folder" / "notes.txt").write_text("hi")
        text, expect = str(tmp_path / "folder"), "is not a checkpoint"
    elif kind == "truncated":
        shutil.copytree(tree["checkpoints"] / "vq-64", tmp_path / "trunc")
        weights = tmp_path / "trunc" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-100])
        text, expect = str(tmp_path / "trunc"), "truncated"
    elif kind == "file":
        text, expect = str(tree["checkpoints"] / "vq-64" / "config.json"), "is a file"
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
        text, expect = "someone/not-cached-repo", "cannot download"
    before = tree_digest(tmp_path), tree_digest(tree["checkpoints"])
    at = _app()
    at.sidebar.text_input(key="new_source").input(text).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and expect in errors[0], errors
    assert at.title[0].value == "Compare checkpoints" and len(at.dataframe) == 1  # the page still works
    for page in PAGES:
        _open(at, page)
        assert not at.exception, (page, [e.value for e in at.exception])
    if kind == "truncated":
        # Loading the truncated copy directly (already-selected source) is one error too.
        at.session_state["extra_sources"] = {"broken": text}
        at.session_state["selected_sources"] = ["broken"]
        _open(at, "codebook_usage")
        assert not at.exception
        assert len(at.error) == 1 and "truncated" in at.error[0].value
    assert (tree_digest(tmp_path), tree_digest(tree["checkpoints"])) == before


def test_add_good_source_by_path(tree):
    at = _app()
    path = str(tree["run"])
    at.sidebar.text_input(key="new_source").input(path).run()
    _ok(at, "Compare checkpoints")
    selected = at.sidebar.multiselect(key="w_selected_sources").value
    assert any(path in s for s in selected)
    assert len(at.dataframe[0].value) == len(TINY) + 2  # the newest run (selected at start), the 4, the added one
