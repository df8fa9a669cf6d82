"""The trainer: config validation, a tiny end-to-end run (train -> checkpoint -> eval -> load),
keep_last, NaN stop, offline push, sweep, and the shipped configs.

Training here is real (a 16x16, hidden-16 model for a dozen steps) and runs in-process through
``trainer.cli.main`` where a subprocess is not what is being tested.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml

import vqexplore
from helpers.trainer_runs import ROOT, run_trainer, write_config
from trainer import cli
from trainer.config import load_config
from trainer.sweep import sweep_configs
from vqexplore.data import make_dataset, validation_batch
from vqexplore.hub import list_checkpoints, read_run_metrics


def _main(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _one_error_line(err: str) -> str:
    """stderr of a command that failed before any work: exactly one line, ``error: ...``."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _error_line(err: str) -> str:
    """stderr of a command that failed during work (after progress output): one ``error:`` line."""
    lines = [part for line in err.splitlines() for part in line.split("\r") if part.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Config validation: one line naming the key, exit code 2, before any work
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("edit, expected", [
    (lambda c: c.update(optimiser="adam"), "optimiser: unknown key"),
    (lambda c: c["train"].update(stpes=10), "train.stpes: unknown key (did you mean steps?)"),
    (lambda c: c["train"].update(steps="many"), "train.steps: expected an integer"),
    (lambda c: c["model"].update(l2_norm="perhaps"), "model.l2_norm: expected true/false"),
    (lambda c: c["model"].update(codebook_size=0), "model.codebook_size: must be a positive integer"),
    (lambda c: c["model"].update(quantizer="fsq", codebook_size=None, code_dim=None, levels=[8, 1, 5]),
     "model.levels[1]: every FSQ level must be >= 2"),
    (lambda c: c["model"].update(quantizer="gumbel"), "model.quantizer: must be one of vq, fsq, simvq, lfq, bsq, ibq"),
    (lambda c: c["data"].update(train="/no/such/imagenet/train"), "data.train: /no/such/imagenet/train does not exist"),
    (lambda c: c["data"].update(size=30), "data.size: must be a multiple of 4"),
    (lambda c: c["train"].update(precision="fp8"), "train.precision: must be fp32 or bf16"),
    (lambda c: c["train"].update(lr=-1.0), "train.lr: must be a positive number"),
    (lambda c: c["eval"].update(lpips_weights="/no/alexnet.pth"), "eval.lpips_weights: /no/alexnet.pth does not exist"),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path, capsys, edit, expected):
    path = write_config(tmp_path / "c.yaml", "bad", tmp_path / "runs")
    cfg = yaml.safe_load(path.read_text())
    edit(cfg)
    path.write_text(yaml.safe_dump(cfg))
    rc, _, err = _main(capsys, "--cfg", path)
    assert rc == 2
    assert expected in _one_error_line(err)
    assert not (tmp_path / "runs").exists()  # nothing was started


@pytest.mark.parametrize("override, expected", [
    ("train.steps=abc", "train.steps: expected an integer"),
    ("model.codebook_size=0", "model.codebook_size: must be a positive integer"),
    ("modle.codebook_size=8", "modle.codebook_size: unknown section 'modle' (did you mean model?)"),
    ("train.nope=1", "train.nope: unknown key"),
    ("steps", "override 'steps' must look like key=value"),
])
def test_bad_override(tmp_path, capsys, override, expected):
    path = write_config(tmp_path / "c.yaml", "bad", tmp_path / "runs")
    rc, _, err = _main(capsys, "--cfg", path, override)
    assert rc == 2
    assert expected in _one_error_line(err)


def test_overrides_and_yaml_numbers(tmp_path):
    path = write_config(tmp_path / "c.yaml", "ok", tmp_path / "runs")
    text = path.read_text().replace("lr: 0.001", "lr: 4e-4")  # PyYAML reads this as a string
    path.write_text(text)
    cfg = load_config(path, ["train.steps=200", "model.quantizer=fsq", "model.levels=[8,5,5,5]",
                             "model.codebook_size=null", "model.code_dim=null"])
    assert cfg.train.lr == 4e-4 and cfg.train.steps == 200
    assert cfg.model.codebook_size == 1000 and cfg.model.code_dim == 4  # implied by the levels


def test_model_section_is_vqmodels_own_signature():
    # One owner: every VQModel argument is a model: key (type-checked from its annotation), and
    # VQModel's error carries the key, which the trainer prefixes without reading the message.
    import inspect

    from vqexplore import ConfigError, VQModel

    cfg = load_config(None)
    assert list(cfg.model) == list(inspect.signature(VQModel).parameters)
    assert cfg.model.codebook_size == 512 and cfg.model.code_dim == 64  # effective, not None
    with pytest.raises(ConfigError) as e:
        load_config(None, ["model.rotation_trick=perhaps"])
    assert e.value.key == "model.rotation_trick" and e.value.problem.startswith("expected true/false")
    with pytest.raises(ConfigError) as e:
        VQModel(quantizer="fsq", levels=[8, 1])
    assert e.value.key == "levels[1]" and str(e.value).startswith("levels[1]: every FSQ level must be >= 2")


def test_missing_imagenet_is_a_clear_error_without_traceback():
    # A real process: the shipped study config points at an ImageNet folder this machine lacks.
    r = run_trainer("--cfg", "configs/imagenet64/vq-512.yaml", timeout=120)
    assert r.returncode == 2, r.stderr
    line = _one_error_line(r.stderr)
    assert "data.train: /data/imagenet/train does not exist" in line


def test_help_documents_the_commands(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for word in ("--cfg", "--resume", "eval", "push", "sweep", "torchrun"):
        assert word in out


def test_shipped_configs_are_valid():
    cpu_all = sweep_configs(ROOT / "configs" / "cpu")
    # The VQGAN stage's CPU row (the 256-px rows' twin, configs/imagenet256) is part of the sweep too.
    vqgan = [p for p in cpu_all if p.name.startswith("vqgan-")]
    assert [p.name for p in vqgan] == ["vqgan-vq-l2-1024.yaml"]
    cpu = [p for p in cpu_all if p not in vqgan]
    study = sorted((ROOT / "configs" / "imagenet64").glob("*.yaml"))
    # The study's 18 rows, then 11 remedy rows (VQ-16384 remedies with and without l2, LFQ, BSQ, IBQ).
    assert len(cpu) == 29 and len(study) == 29
    load_config(ROOT / "configs" / "cpu" / "default.yaml")
    for path in cpu_all:
        load_config(path)
    from trainer.sweep import table_of

    assert [table_of(load_config(p)) for p in vqgan] == ["vqgan"]
    assert "vqgan" not in {table_of(load_config(p)) for p in cpu}
    for path in study:
        cfg = load_config(path, ["data.train=builtin", "data.val=builtin"])
        assert (cfg.train.batch_size, cfg.train.lr, cfg.train.steps) == (256, 4e-4, 500_000)
        assert (cfg.model.hidden_dim, cfg.model.n_resblocks, cfg.data.size) == (256, 2, 64)
    # Every study row has its CPU twin with the same quantizer settings.
    def key(path):
        m = load_config(path, ["data.train=builtin", "data.val=builtin"]).model
        return (m.quantizer, m.codebook_size, m.code_dim, m.l2_norm, m.ema_update, m.entropy_reg > 0,
                m.kmeans_init, m.dead_code_threshold > 0, m.rotation_trick)
    assert sorted(map(key, cpu)) == sorted(map(key, study))
    # The demo sets: 64 px on the photo corpus, one model and recipe per set (the committed CPU set
    # at quarter width, the study-size set for a GPU at half width), and the story's six quantizers.
    for folder, (hidden, batch, steps) in (("demo", (64, 32, 6000)), ("demo-gpu", (128, 256, 8000))):
        demo = sorted((ROOT / "configs" / folder).glob("*.yaml"))
        # The VQGAN stage's demo: one of the MSE demos fine-tuned with the discriminator (its own recipe).
        gan = [p for p in demo if load_config(p).loss.gan]
        demo = [p for p in demo if p not in gan]
        assert [p.name for p in gan] == (["simvq-4096-gan.yaml"] if folder == "demo" else [])
        for path in gan:
            cfg = load_config(path)
            start = ROOT / cfg.train.init_from
            assert (start.parent.name, cfg.data.train, cfg.data.size, cfg.loss.lpips_weight) == \
                ("checkpoints", "photos", 64, 0.0)
            assert dict(load_config(ROOT / "configs" / folder / f"{start.name}.yaml").model) == dict(cfg.model)
        assert len(demo) == 6
        kinds = []
        for path in demo:
            cfg = load_config(path)
            assert (cfg.data.train, cfg.data.size, cfg.model.hidden_dim, cfg.train.batch_size, cfg.train.steps) == \
                ("photos", 64, hidden, batch, steps), path
            kinds.append((cfg.model.quantizer, cfg.model.l2_norm, cfg.model.dead_code_threshold > 0))
        assert sorted(kinds) == sorted([("vq", False, False), ("vq", False, True), ("vq", True, False),
                                        ("fsq", False, False), ("simvq", False, False), ("bsq", False, False)])


# ---------------------------------------------------------------------------------------------
# End to end: train -> checkpoints (keep_last) -> eval -> vqexplore.load
# ---------------------------------------------------------------------------------------------

def test_train_checkpoint_eval_load(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", "e2e", tmp_path / "runs", model={"ema_update": True})
    rc, _, err = _main(capsys, "--cfg", cfg)
    assert rc == 0, err
    run = tmp_path / "runs" / "e2e"
    # keep_last=2 of checkpoints every 3 steps over 12 steps; no temporary folder left behind.
    assert [s for s, _ in list_checkpoints(run)] == [9, 12]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000009", "step-00000012"]
    final = run / "checkpoints" / "step-00000012"
    for name in ("config.json", "model.safetensors", "README.md", "trainer_state.json", "trainer_state.safetensors"):
        assert (final / name).is_file(), name
    assert "python -m trainer --cfg" in (final / "README.md").read_text()
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["codebook_size"] == 32
    assert list(run.glob("events.out.tfevents.*"))
    assert (run / "samples" / "step-00000012.png").is_file()

    rows = read_run_metrics(run)
    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "val"]
    assert [r["step"] for r in train_rows] == [2, 4, 6, 8, 10, 12]
    assert [r["step"] for r in val_rows] == [6, 12]
    for key in ("loss", "recon_loss", "commitment_loss", "usage", "perplexity", "lr", "images_per_s", "time"):
        assert key in train_rows[0], key
    assert "codebook_loss" not in train_rows[0]  # EMA replaces the codebook loss
    for key in ("usage", "perplexity", "psnr", "ssim", "dead_codes"):
        assert key in val_rows[0], key

    # No optimizer pickles anywhere: trainer state is safetensors + JSON.
    state = json.loads((final / "trainer_state.json").read_text())
    assert state["step"] == 12 and state["optimizer"]["param_groups"][0]["lr"] == 1e-3

    rc, out, err = _main(capsys, "eval", "--ckpt", run)
    assert rc == 0, err
    metrics = json.loads((final / "metrics.json").read_text())
    for key in ("usage", "perplexity", "dead_codes", "psnr", "ssim", "lpips", "rfid", "notes", "num_images"):
        assert key in metrics, key
    assert metrics["num_images"] == len(make_dataset("builtin", "val", 16)) and 0 < metrics["usage"] <= 1
    if metrics["lpips"] is None:
        assert any(n.startswith("LPIPS skipped") for n in metrics["notes"])
        assert "LPIPS skipped" in err
    assert "PSNR" in (final / "README.md").read_text()  # the card now holds the metrics

    model = vqexplore.load(run)  # the run folder -> its newest checkpoint
    assert model.codebook_size == 32 and model.quantizer.ema_update
    x = validation_batch("builtin", n=4, size=16)
    with torch.no_grad():
        assert model(x).reconstruction.shape == x.shape

    # A second fresh run under the same name refuses to overwrite; --resume at the end is a no-op.
    rc, _, err = _main(capsys, "--cfg", cfg)
    assert rc == 2 and "--resume" in _one_error_line(err)
    rc, _, err = _main(capsys, "--cfg", cfg, "--resume")
    assert rc == 0, err
    rc, _, err = _main(capsys, "--cfg", cfg, "--resume", "model.codebook_size=64")
    assert rc == 2 and "model.codebook_size: differs from the run being resumed" in _one_error_line(err)

    # export: a demo checkpoint without the optimizer state, loadable.
    rc, _, err = _main(capsys, "export", "--ckpt", run, "--to", tmp_path / "demo")
    assert rc == 0, err
    # (training.json: the run facts the card is generated from, issue 8)
    # (projection.npz, evaluation.npz: the dashboard's views, stored for these weights)
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == \
        ["README.md", "config.json", "evaluation.npz", "metrics.json", "model.safetensors", "projection.npz",
         "training.json"]
    vqexplore.load(tmp_path / "demo")


def test_cards_are_made_from_training_json_never_read(tmp_path, capsys):
    # Run facts live in training.json beside the weights; eval and export regenerate the card from
    # it, so a card edited (or broken) by hand is replaced, not parsed.
    cfg = write_config(tmp_path / "c.yaml", "facts", tmp_path / "runs", train={"steps": 3, "val_every": 0})
    assert _main(capsys, "--cfg", cfg)[0] == 0
    final = tmp_path / "runs" / "facts" / "checkpoints" / "step-00000003"
    facts = json.loads((final / "training.json").read_text())
    assert facts["name"] == "facts" and facts["step"] == 3 and "built-in photos" in facts["data"]
    assert facts["commands"] == [f"python -m trainer --cfg {cfg}"]
    (final / "README.md").write_text("## How it was made\n```\nrm -rf /\n```\n")
    assert _main(capsys, "eval", "--ckpt", final)[0] == 0
    card = (final / "README.md").read_text()
    assert f"python -m trainer --cfg {cfg}" in card and "rm -rf" not in card and "# facts" in card
    assert _main(capsys, "export", "--ckpt", final, "--to", tmp_path / "demo")[0] == 0
    exported = json.loads((tmp_path / "demo" / "training.json").read_text())
    assert exported["commands"] == [f"python -m trainer --cfg {cfg}", f"python -m trainer eval --ckpt {final}",
                                    f"python -m trainer export --ckpt {final} --to {tmp_path / 'demo'}"]
    card = (tmp_path / "demo" / "README.md").read_text()
    assert all(c in card for c in exported["commands"]) and "PSNR" in card and "# demo" in card


def test_bf16_autocast_and_channels_last(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", "bf16", tmp_path / "runs",
                       model={"quantizer": "simvq"},
                       train={"steps": 3, "precision": "bf16", "channels_last": True, "val_every": 0, "ckpt_every": 0})
    rc, _, err = _main(capsys, "--cfg", cfg)
    assert rc == 0, err
    model = vqexplore.load(tmp_path / "runs" / "bf16")
    assert all(t.dtype == torch.float32 for t in model.state_dict().values() if t.is_floating_point())
    # precision: bf16 really ran the forward in bf16: the same run in fp32 (seed, data, steps) ends
    # with other weights, while a second bf16 run ends with the same ones.
    runs = {}
    for name, precision in (("fp32", "fp32"), ("bf16-again", "bf16")):
        rc, _, err = _main(capsys, "--cfg", cfg, f"name={name}", f"train.precision={precision}")
        assert rc == 0, err
        runs[name] = vqexplore.load(tmp_path / "runs" / name).state_dict()
    bf16 = model.state_dict()
    assert all(torch.equal(bf16[k], runs["bf16-again"][k]) for k in bf16)
    differing = [k for k in bf16 if bf16[k].is_floating_point() and not torch.equal(bf16[k], runs["fp32"][k])]
    assert len(differing) > len(bf16) // 2, f"fp32 and bf16 runs differ only in {differing}"


def test_nan_loss_stops_with_last_good_checkpoint(tmp_path, capsys):
    # lr = 1e30 makes every weight ~1e30 after one Adam step: the next forward overflows.
    cfg = write_config(tmp_path / "c.yaml", "nan", tmp_path / "runs",
                       train={"lr": 1e30, "ckpt_every": 1, "log_every": 1, "val_every": 0, "steps": 10})
    rc, _, err = _main(capsys, "--cfg", cfg)
    assert rc == 1
    line = _error_line(err)
    assert "the loss became" in line and "step 2" in line and "step-00000001" in line
    run = tmp_path / "runs" / "nan"
    assert [s for s, _ in list_checkpoints(run)] == [1]
    model = vqexplore.load(run)
    assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


# ---------------------------------------------------------------------------------------------
# push: offline -> one clear error, nothing local touched
# ---------------------------------------------------------------------------------------------

def _tree_digest(folder: Path) -> dict:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pushrun")
    cfg = write_config(tmp / "c.yaml", "push", tmp / "runs", train={"steps": 3, "val_every": 0})
    assert cli.main(["--cfg", str(cfg)]) == 0
    return tmp / "runs" / "push"


def test_push_offline_is_one_clear_error_and_touches_nothing(trained_run):
    ckpt = list_checkpoints(trained_run)[-1][1]
    before = _tree_digest(ckpt)
    r = run_trainer("push", "--ckpt", str(ckpt), "--repo", "someone/vq-test", timeout=120,
                    extra_env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_not_a_real_token",
                               "HF_HUB_OFFLINE": "0"})
    assert r.returncode == 1, r.stderr
    line = _one_error_line(r.stderr)
    assert "cannot reach the Hugging Face Hub at http://127.0.0.1:9" in line
    assert _tree_digest(ckpt) == before


def test_push_without_token(trained_run, capsys, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    ckpt = list_checkpoints(trained_run)[-1][1]
    before = _tree_digest(ckpt)
    rc, _, err = _main(capsys, "push", "--ckpt", ckpt, "--repo", "someone/vq-test")
    assert rc == 1 and "no Hugging Face token" in _one_error_line(err)
    rc, _, err = _main(capsys, "push", "--ckpt", ckpt, "--repo", "not a repo")
    assert rc == 1 and "not a Hub repo id" in _one_error_line(err)
    assert _tree_digest(ckpt) == before


def test_push_stages_card_with_metrics(trained_run, monkeypatch, tmp_path):
    """With a (fake) reachable Hub, the uploaded folder holds weights, config and a model card
    with model-index metrics; the local folder is unchanged."""
    import huggingface_hub

    from trainer import push

    ckpt = list_checkpoints(trained_run)[-1][1]
    (ckpt / "metrics.json").write_text(json.dumps({"usage": 0.5, "psnr": 20.0, "ssim": 0.5,
                                                   "data_description": "built-in photos"}))
    before = _tree_digest(ckpt)
    uploaded = {}

    class FakeApi:
        def __init__(self, **kw):
            pass

        def create_repo(self, repo, **kw):
            return f"https://hub.example/{repo}"

        def upload_folder(self, repo_id, folder_path, **kw):
            uploaded.update({p.name: p.read_text(errors="replace") for p in Path(folder_path).iterdir()})

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(push, "url_reachable", lambda endpoint, timeout=5.0: True)
    url = push.push_checkpoint(str(ckpt), "someone/vq-test", token="hf_fake")
    assert url.endswith("someone/vq-test")
    assert sorted(uploaded) == ["README.md", "config.json", "metrics.json", "model.safetensors"]
    assert "model-index" in uploaded["README.md"] and "built-in photos" in uploaded["README.md"]
    assert _tree_digest(ckpt) == before


# ---------------------------------------------------------------------------------------------
# sweep: every row trained and evaluated, tables in the study's layout
# ---------------------------------------------------------------------------------------------

def test_sweep_writes_tables(tmp_path, capsys):
    folder = tmp_path / "rows"
    folder.mkdir()
    runs = tmp_path / "runs"
    short = {"steps": 4, "val_every": 0, "log_every": 2, "ckpt_every": 0}
    write_config(folder / "vq-32.yaml", "vq-32", runs, train=short)
    write_config(folder / "fsq-555.yaml", "fsq-555", runs, train=short,
                 model={"quantizer": "fsq", "levels": [5, 5, 5], "codebook_size": None, "code_dim": None})
    write_config(folder / "vq-32-restart.yaml", "vq-32-restart", runs, train=short,
                 model={"dead_code_threshold": 0.5, "kmeans_init": True})
    write_config(folder / "default.yaml", "not-a-row", runs, train=short)
    out = tmp_path / "sweep.md"
    rc, _, err = _main(capsys, "sweep", folder, "--out", out, "eval.batch_size=128")
    assert rc == 0, err
    text = out.read_text()
    assert "python -m trainer sweep" in text
    assert "| code dim | codebook size | l2 norm | entropy reg | usage |" in text
    assert "| levels | codebook size | usage |" in text
    assert "| [5,5,5] | 125 |" in text and "| 8 | 32 | no | no |" in text
    assert not (runs / "not-a-row").exists()
    assert json.loads((runs / "vq-32" / "checkpoints" / "step-00000004" / "metrics.json").read_text())["usage"] > 0
    # The remedies get their own table (with the usage ratio over plain VQ), and every row is also
    # written as data beside the tables, which the dashboard's rate-distortion preset reads.
    assert "| quantizer | remedy | l2 norm | code dim | codebook size | usage |" in text
    assert "| VQ | k-means init + dead-code restart 0.5 | no | 8 | 32 |" in text
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert sorted(r["name"] for r in rows) == ["fsq-555", "vq-32", "vq-32-restart"]
    from trainer.sweep import read_rows
    from vqexplore.ratedistortion import points_from_sweep_rows

    points = {p.name: p for p in points_from_sweep_rows(read_rows(out))}
    assert points["vq-32-restart"].variant == "code dim 8, k-means init + dead-code restart 0.5"
    assert points["fsq-555"].codebook_size == 125

    # --only reruns some rows and keeps the others as recorded: their run folders may be gone.
    import shutil

    shutil.rmtree(runs / "vq-32")
    shutil.rmtree(runs / "fsq-555")
    rc, _, err = _main(capsys, "sweep", folder, "--out", out, "--only", "fsq-555", "eval.batch_size=128")
    assert rc == 0, err
    assert not (runs / "vq-32").exists() and (runs / "fsq-555" / "checkpoints" / "step-00000004").is_dir()
    again = json.loads(out.with_suffix(".json").read_text())
    assert [r["name"] for r in again["rows"]] == [r["name"] for r in rows]
    assert {r["name"]: r["metrics"] for r in again["rows"]}["vq-32"] == {r["name"]: r["metrics"] for r in rows}["vq-32"]
    assert again["updates"][-1]["rows"] == ["fsq-555"] and "--only fsq-555" in again["updates"][-1]["command"]
    text = out.read_text()
    assert "Rows fsq-555 rerun by:" in text and "| 8 | 32 | no | no |" in text
    # A kept row whose config changed since it was recorded, or an unknown row: one line, nothing run.
    write_config(folder / "vq-32.yaml", "vq-32", runs, train=short, model={"codebook_size": 64})
    rc, _, err = _main(capsys, "sweep", folder, "--out", out, "--only", "fsq-555")
    assert rc == 2 and "row vq-32 changed since" in err and err.count("\n") == 1, err
    rc, _, err = _main(capsys, "sweep", folder, "--out", out, "--only", "nope")
    assert rc == 2 and "no row nope" in err and err.count("\n") == 1, err
    assert not (runs / "vq-32").exists()
