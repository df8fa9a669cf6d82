"""Loading by Hub repo id through the real huggingface_hub download path.

There is no network here, so the test starts a Hub-compatible server on loopback: `olah`
(from PyPI) serving a plain git repository from a local mirror folder in offline mode.
`HF_ENDPOINT` points huggingface_hub at it; nothing else is mocked.
"""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vqexplore import VQModel


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    olah = Path(sys.executable).parent / "olah-cli"
    if not olah.exists() or shutil.which("git") is None:
        pytest.fail("olah-cli and git are required (pip install -r requirements-dev.txt)")
    root = tmp_path_factory.mktemp("hub")
    repo = root / "mirrors" / "models" / "vqexplore-test" / "tiny-fsq"
    torch.manual_seed(0)
    model = VQModel(quantizer="fsq", levels=[5, 5, 5], hidden_dim=16, n_resblocks=1).eval()
    model.save_pretrained(repo)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "tiny checkpoint")
    port = _free_port()
    (root / "olah.toml").write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = "{root / "cache"}"\n'
        f'mirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\n'
        f'mirrors-path = ["{root / "mirrors"}"]\n\n[accessibility]\noffline = true\n')
    proc = subprocess.Popen([str(olah), "-c", str(root / "olah.toml"), "--log-path", str(root / "logs")],
                            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("olah exited at start-up")
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("olah did not start within 60 s")
    yield {"endpoint": f"http://127.0.0.1:{port}", "model": model, "root": root}
    proc.terminate()
    proc.wait(10)


def _run(code, env):
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)


def test_load_by_repo_id_through_huggingface_hub(hub, tmp_path):
    env = {**os.environ, "HF_ENDPOINT": hub["endpoint"], "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    code = (
        "import torch, vqexplore\n"
        "m = vqexplore.load('vqexplore-test/tiny-fsq')\n"
        "torch.manual_seed(1)\n"
        "x = torch.rand(2, 3, 16, 16) * 2 - 1\n"
        "print(m.source.kind, m.codebook_size)\n"
        "torch.save(m(x).reconstruction, %r)\n" % str(tmp_path / "out.pt"))
    out = _run(code, env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["hub", "125"]
    torch.manual_seed(1)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        expected = hub["model"](x).reconstruction
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)
    # The files landed in the real huggingface_hub cache: a second load works offline.
    env2 = {**env, "HF_HUB_OFFLINE": "1"}
    out = _run("import vqexplore; print(vqexplore.load('vqexplore-test/tiny-fsq').codebook_size)", env2)
    assert out.returncode == 0 and out.stdout.strip() == "125", out.stderr


def test_unknown_repo_gives_one_clear_error(hub, tmp_path):
    env = {**os.environ, "HF_ENDPOINT": hub["endpoint"], "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    code = ("import vqexplore\n"
            "try:\n    vqexplore.load('vqexplore-test/does-not-exist')\n"
            "except vqexplore.HubError as e:\n    print('ERR', e)\n")
    out = _run(code, env)
    assert out.stdout.startswith("ERR "), (out.stdout, out.stderr)
    assert "does-not-exist" in out.stdout


# -- path confinement: vqexplore.hub.inside (the demo's upload folder, the dashboard's --confine) --

def test_inside_accepts_the_root_and_what_lies_below_it(tmp_path):
    from vqexplore.hub import inside

    root = tmp_path / "gradio-tmp"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "x.png").write_bytes(b"x")
    assert inside(root, [root])                           # the root itself
    assert inside(root / "a" / "b" / "x.png", [root])     # any depth below it
    assert inside(root / "a" / ".." / "a" / "b", [root])  # `..` that stays inside
    assert inside(str(root / "a") + os.sep, [str(root) + os.sep])  # trailing separators
    assert inside("/etc/passwd", ["/"])                   # the filesystem root contains everything
    assert inside(root / "a", [tmp_path / "elsewhere", root])  # any of several roots
    assert not inside(root / "a", [])


def test_inside_refuses_a_sibling_whose_name_starts_with_the_root(tmp_path):
    """The bug this guards: a prefix comparison without the path separator takes
    `gradio-tmp-evil/secret.png` (a sibling folder) for a file inside `gradio-tmp`."""
    from vqexplore.hub import inside

    root, evil = tmp_path / "gradio-tmp", tmp_path / "gradio-tmp-evil"
    root.mkdir()
    evil.mkdir()
    (evil / "secret.png").write_bytes(b"x")
    assert not inside(evil / "secret.png", [root])
    assert not inside(evil, [root])
    assert not inside(tmp_path / "gradio-tmpx", [root])  # also when it does not exist
    assert not inside(tmp_path, [root])                   # the parent
    assert not inside(root / ".." / "gradio-tmp-evil" / "secret.png", [root])  # `..` out of the root


def test_inside_resolves_symlinks_and_home(tmp_path, monkeypatch):
    from vqexplore.hub import inside

    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"x")
    (root / "link.png").symlink_to(outside / "secret.png")  # planted inside, points out
    (root / "dirlink").symlink_to(outside)
    assert not inside(root / "link.png", [root])
    assert not inside(root / "dirlink" / "secret.png", [root])
    (outside / "to-root").symlink_to(root)                  # a link outside that points in
    assert inside(outside / "to-root", [root])
    assert inside(tmp_path / "root-alias", [root]) is False  # missing path next to the root
    (tmp_path / "root-alias").symlink_to(root)
    assert inside(root / "x", [tmp_path / "root-alias"])     # a root given through a link
    monkeypatch.setenv("HOME", str(tmp_path))
    assert inside("~/root/x", [root]) and inside(root / "x", ["~/root"])
    assert not inside("~/outside/secret.png", [root])
