"""VQModel: the study's architecture, Hub-format save/load, strict and pickle-free loading,
clear errors for broken checkpoints."""
import json
import os
import subprocess
import sys

import pytest
import torch

import vqexplore
from vqexplore import CheckpointError, ConfigError, VQModel
from vqexplore.hub import checkpoint_dirname, list_checkpoints, resolve

TINY = dict(hidden_dim=16, n_resblocks=1)
VARIANTS = [
    dict(quantizer="vq", codebook_size=64, code_dim=8),
    dict(quantizer="vq", codebook_size=64, code_dim=8, l2_norm=True, entropy_reg=0.1),
    dict(quantizer="vq", codebook_size=64, code_dim=8, ema_update=True),
    dict(quantizer="fsq", levels=[8, 5, 5, 5]),
    dict(quantizer="simvq", codebook_size=64, code_dim=8),
    dict(quantizer="lfq", codebook_size=256),
    dict(quantizer="bsq", codebook_size=256, code_dim=8),
    dict(quantizer="ibq", codebook_size=64, code_dim=8),
]


def test_study_model_has_the_published_parameter_count():
    model = VQModel(quantizer="vq", codebook_size=512, code_dim=64)
    assert sum(p.numel() for p in model.parameters()) == 4_928_835
    assert model.codebook_size == 512 and model.codebook_vectors().shape == (512, 64)


@pytest.mark.parametrize("kwargs", VARIANTS, ids=lambda k: "-".join(f"{v}" for v in k.values()))
def test_forward_encode_decode_shapes(kwargs):
    torch.manual_seed(0)
    model = VQModel(**kwargs, **TINY).eval()
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    out = model(x)
    assert out.reconstruction.shape == x.shape
    assert out.reconstruction.abs().max() <= 1
    assert out.indices.shape == (2, 8, 12) and out.indices.dtype == torch.int64
    ids = model.encode(x)
    assert torch.equal(ids, out.indices)
    assert torch.allclose(model.decode_indices(ids), out.reconstruction, atol=1e-5)
    assert model.codebook_vectors().shape == (model.codebook_size, model.code_dim)


def test_decode_indices_rejects_out_of_range():
    model = VQModel(quantizer="vq", codebook_size=16, code_dim=4, **TINY)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        model.decode_indices(torch.full((1, 2, 2), 16))


@pytest.mark.parametrize("kwargs", VARIANTS, ids=lambda k: "-".join(f"{v}" for v in k.values()))
def test_save_load_roundtrip_is_bit_identical(tmp_path, kwargs):
    torch.manual_seed(0)
    model = VQModel(**kwargs, **TINY)
    model.train()
    model(torch.rand(2, 3, 16, 16) * 2 - 1)  # moves EMA buffers, so they must be saved too
    model.eval()
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["README.md", "config.json", "model.safetensors"]
    loaded = VQModel.from_pretrained(tmp_path / "ckpt")
    assert not loaded.training
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    a, b = model(x), loaded(x)
    assert torch.equal(a.reconstruction, b.reconstruction) and torch.equal(a.indices, b.indices)
    assert torch.equal(model.codebook_vectors(), loaded.codebook_vectors())
    assert loaded.config == model.config
    card = (tmp_path / "ckpt" / "README.md").read_text()
    assert "library_name: vqexplore" in card and kwargs["quantizer"] in card


def _saved(tmp_path):
    model = VQModel(quantizer="vq", codebook_size=16, code_dim=4, **TINY)
    model.save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_truncated_weights_give_one_clear_error(tmp_path):
    ckpt = _saved(tmp_path)
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors is truncated"):
        vqexplore.load(ckpt)


@pytest.mark.parametrize("content", [b"", b"garbage!", b"\xff" * 64])
def test_garbage_weights_give_one_clear_error(tmp_path, content):
    ckpt = _saved(tmp_path)
    (ckpt / "model.safetensors").write_bytes(content)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        vqexplore.load(ckpt)


def test_pickle_weights_are_never_unpickled(tmp_path):
    ckpt = _saved(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import pickle
    (ckpt / "model.safetensors").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        vqexplore.load(ckpt)
    assert not marker.exists()


def test_missing_and_mismatched_files(tmp_path):
    ckpt = _saved(tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**cfg, "codebook_size": 32}))
    with pytest.raises(CheckpointError, match="does not match"):
        vqexplore.load(ckpt)
    (ckpt / "config.json").write_text(json.dumps({**cfg, "wings": 2}))
    with pytest.raises(CheckpointError, match="unknown field.*wings"):
        vqexplore.load(ckpt)
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        vqexplore.load(ckpt)
    (ckpt / "config.json").write_text(json.dumps({**cfg, "quantizer": "nope"}))
    with pytest.raises(CheckpointError, match="invalid model"):
        vqexplore.load(ckpt)
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        vqexplore.load(ckpt)


def test_extra_or_missing_weights_are_rejected(tmp_path):
    from safetensors.torch import load_file, save_file

    ckpt = _saved(tmp_path)
    state = load_file(ckpt / "model.safetensors")
    save_file({**state, "extra": torch.zeros(1)}, ckpt / "model.safetensors")
    with pytest.raises(CheckpointError, match="does not match"):
        vqexplore.load(ckpt)
    state.pop("quantizer.embedding")
    save_file(state, ckpt / "model.safetensors")
    with pytest.raises(CheckpointError, match="does not match"):
        vqexplore.load(ckpt)


def test_load_resolves_run_folders_to_the_newest_checkpoint(tmp_path):
    run = tmp_path / "runs" / "exp"
    for step in (100, 2000, 300):
        VQModel(quantizer="vq", codebook_size=16, code_dim=4, **TINY).save_pretrained(
            run / "checkpoints" / checkpoint_dirname(step))
    (run / "checkpoints" / ".tmp-step-00009999").mkdir()  # a half-written save is ignored
    assert [s for s, _ in list_checkpoints(run)] == [100, 300, 2000]
    src = resolve(run)
    assert src.kind == "run" and src.step == 2000 and src.run_dir == run
    model = vqexplore.load(run)
    assert model.source.path.name == "step-00002000"
    src = resolve(run / "checkpoints" / "step-00000300")
    assert src.kind == "checkpoint" and src.step == 300 and src.run_dir == run


def test_bad_sources_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        vqexplore.load(tmp_path / "nope" / "deeper" / "x")
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        vqexplore.load(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        vqexplore.load(tmp_path / "file.txt")
    with pytest.raises(ConfigError):
        VQModel(quantizer="fsq", levels=[8, 1])


# The load alone (imports done before the clock starts), timed in the subprocess: the probe of
# the endpoint takes at most 3 s; huggingface_hub's own retries on a refused connection ~25 s.
FAST_FAIL_SECONDS = 6
_TIMED_LOAD = ("import time, huggingface_hub.file_download, vqexplore\n"
               "start = time.monotonic()\n"
               "try:\n    vqexplore.load('someone/some-tokenizer')\n"
               "except vqexplore.HubError as e:\n    print('ERR', e)\n"
               "print('SECONDS', time.monotonic() - start)\n")


def test_hub_repo_id_offline_fails_fast_with_one_message(tmp_path):
    # No network here: HF_HUB_OFFLINE makes huggingface_hub refuse at once; the message must
    # say what to do. Run in a subprocess so the env var is read at import time.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", _TIMED_LOAD], env=env, capture_output=True, text=True, timeout=120)
    seconds = float(out.stdout.split("SECONDS", 1)[1])
    assert seconds < FAST_FAIL_SECONDS, f"the load took {seconds:.1f} s to fail (huggingface_hub's retries take ~25 s)"
    assert "ERR cannot download someone/some-tokenizer" in out.stdout, out.stderr
    assert "local checkpoint folder" in out.stdout


def test_hub_repo_id_unreachable_endpoint_fails_fast(tmp_path):
    # An endpoint on a closed loopback port stands for "no network": connection refused.
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    out = subprocess.run([sys.executable, "-c", _TIMED_LOAD], env=env, capture_output=True, text=True, timeout=120)
    seconds = float(out.stdout.split("SECONDS", 1)[1])
    assert seconds < FAST_FAIL_SECONDS, f"the load took {seconds:.1f} s to fail (huggingface_hub's retries take ~25 s)"
    assert out.stdout.startswith("ERR "), out.stderr


def test_demo_checkpoint_folder_is_not_mistaken_for_a_run(tmp_path):
    VQModel(quantizer="vq", codebook_size=16, code_dim=4, **TINY).save_pretrained(tmp_path / "checkpoints" / "vq-16")
    src = resolve(tmp_path / "checkpoints" / "vq-16")
    assert src.kind == "checkpoint" and src.run_dir is None and src.name == "vq-16"
