"""Checkpoint files on disk and on the Hugging Face Hub: resolve, check, list, read, and the
model card. Loading a model is ``VQModel``'s (``vqexplore.load``); nothing here builds one.

A *checkpoint folder* holds ``config.json`` + ``model.safetensors`` (+ ``README.md``, the
model card, and optionally ``metrics.json``). A *run folder* (``runs/<name>/``) holds
``checkpoints/step-XXXXXXXX/`` checkpoint folders and ``metrics.jsonl``. A *Hub repo id*
(``user/name``) is a repo holding a checkpoint folder's files.

Nothing here unpickles anything: weights are safetensors, configs JSON.
"""
from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from .describe import config_summary, describe_config
from .errors import CheckpointError, HubError
from .runlayout import CHECKPOINTS_DIR, EMA_DIR, EVAL_METRICS, RUN_METRICS, checkpoint_dirname, step_of  # noqa: F401
from .metricinfo import METRIC, TABLE_METRICS
from .runlayout import RunLayout

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
METRICS_NAME = EVAL_METRICS  # the run-folder and checkpoint-file names: vqexplore.runlayout
RUN_METRICS_NAME = RUN_METRICS
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_checkpoint_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint of a run, oldest first.

    Accepts the run folder or its ``checkpoints/`` folder; half-written temporary folders
    (which never carry the ``step-N`` name) are ignored.
    """
    run_dir = Path(run_dir)
    base = run_dir / CHECKPOINTS_DIR if (run_dir / CHECKPOINTS_DIR).is_dir() else run_dir
    found = []
    if base.is_dir():
        for child in base.iterdir():
            step = step_of(child.name)
            if step is not None and child.is_dir() and is_checkpoint_dir(child):
                found.append((step, child))
    return sorted(found)


def checkpoints_in(folder: str | Path) -> list[tuple[str, Path, str]]:
    """The checkpoints directly inside ``folder``, by name: (name, path, kind) with kind
    "checkpoint" (a checkpoint folder) or "run" (a run folder with step-N checkpoints).
    Hidden folders are skipped; a missing folder holds none."""
    folder = Path(folder)
    found = []
    if folder.is_dir():
        for child in sorted(folder.iterdir()):
            if not child.is_dir() or child.name.startswith("."):
                continue
            if is_checkpoint_dir(child):
                found.append((child.name, child, "checkpoint"))
            elif list_checkpoints(child):
                found.append((child.name, child, "run"))
    return found


@dataclass
class Source:
    """Where a checkpoint comes from.

    kind: "checkpoint" (a local checkpoint folder), "run" (a local run folder; ``path`` is its
    newest checkpoint) or "hub" (``path`` is the local snapshot of the repo).
    run_dir: the run folder when the checkpoint belongs to one (its metrics.jsonl lives there).
    step: the training step, when known from the folder name.
    name: a short label for tables and legends.
    """

    kind: str
    path: Path
    name: str
    run_dir: Path | None = None
    step: int | None = None
    repo_id: str | None = None


def looks_like_repo_id(text: str) -> bool:
    return bool(_REPO_ID_RE.match(text)) and ".." not in text


def inside(path: str | Path, roots) -> bool:
    """Whether ``path`` (symlinks and ``..`` resolved) lies inside one of the folders ``roots``."""
    real = os.path.realpath(os.path.expanduser(str(path)))
    for root in roots:
        base = os.path.realpath(os.path.expanduser(str(root)))
        if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
            return True
    return False


def resolve(source: str | Path, *, revision: str | None = None, token: str | bool | None = None,
            local_roots=None) -> Source:
    """Find the checkpoint folder behind a checkpoint folder, a run folder or a Hub repo id.

    local_roots: ``None`` (default) accepts any local path. A sequence of folders confines local
    paths to those folders (what a hosted app wants): any other text is treated as a Hub repo id
    or refused with one message that does not depend on what exists on disk, so a visitor learns
    nothing about the server's files. ``()`` accepts Hub repo ids only.

    Raises :class:`CheckpointError` (or :class:`HubError`) with one sentence saying what to do.
    """
    text = str(source).strip()
    if not text:
        raise CheckpointError("no checkpoint given: pass a checkpoint folder, a run folder or a Hub repo id")
    path = Path(text).expanduser()
    if local_roots is not None and not (local_roots and inside(path, local_roots)):
        if looks_like_repo_id(text):
            local = _download(text, revision=revision, token=token)
            return Source("hub", local, text, None, None, repo_id=text)
        where = " or ".join(str(r) for r in local_roots)
        raise CheckpointError(f"{text} is not a Hub repo id like user/name"
                              + (f" nor a folder inside {where}" if where else "")
                              + "; pick one of the listed checkpoints or type a Hub repo id")
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is a file; pass the checkpoint folder that holds {CONFIG_NAME} and "
                                  f"{WEIGHTS_NAME}")
        if is_checkpoint_dir(path):
            step = step_of(path.name)
            # runs/<name>/checkpoints/step-N/ belongs to a run; checkpoints/vq-512/ does not.
            run = RunLayout.of_checkpoint(path)
            run_dir = run.root if run else None
            label = f"{run_dir.name}@{step}" if run_dir else path.name
            return Source("checkpoint", path, label, run_dir, step)
        ckpts = list_checkpoints(path)
        if ckpts:
            step, newest = ckpts[-1]
            run_dir = path.parent if path.name == CHECKPOINTS_DIR else path
            return Source("run", newest, run_dir.name, run_dir, step)
        if (path / CONFIG_NAME).exists() or (path / WEIGHTS_NAME).exists():
            missing = WEIGHTS_NAME if (path / CONFIG_NAME).exists() else CONFIG_NAME
            raise CheckpointError(f"{path / missing} is missing: a checkpoint folder needs {CONFIG_NAME} and "
                                  f"{WEIGHTS_NAME}")
        raise CheckpointError(f"{path} is not a checkpoint: expected {CONFIG_NAME} + {WEIGHTS_NAME}, "
                              f"or a run folder with {CHECKPOINTS_DIR}/step-N/ inside")
    if looks_like_repo_id(text):
        local = _download(text, revision=revision, token=token)
        return Source("hub", local, text, None, None, repo_id=text)
    raise CheckpointError(f"{text} does not exist; pass a checkpoint folder, a run folder or a Hub repo id like "
                          "user/name")


def _download(repo_id: str, *, revision: str | None, token: str | bool | None) -> Path:
    """Fetch config.json and model.safetensors of a Hub repo through the real download path
    (``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` are honoured; the cache is reused)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub import errors as hf_errors

    # huggingface_hub retries a refused connection 5 times with backoff (~25 s): probe the
    # endpoint once with a short timeout and go straight to the local cache when it is down.
    local_only = not hub_reachable()
    files = []
    try:
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            files.append(Path(hf_hub_download(repo_id, name, revision=revision, token=token,
                                              local_files_only=local_only)))
        try:  # optional: the metrics the trainer published beside the weights
            hf_hub_download(repo_id, METRICS_NAME, revision=revision, token=token, local_files_only=local_only)
        except Exception:
            pass
    except hf_errors.RepositoryNotFoundError:
        raise HubError(f"Hub repo {repo_id} was not found (or is private: log in with `hf auth login`)") from None
    except hf_errors.RevisionNotFoundError:
        raise HubError(f"Hub repo {repo_id} has no revision {revision!r}") from None
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled):
        # (a subclass of EntryNotFoundError in recent huggingface_hub: caught first)
        raise HubError(f"cannot download {repo_id} from the Hub (offline or unreachable) and it is not "
                       f"in the local cache; connect to the internet or pass a local checkpoint folder") from None
    except hf_errors.EntryNotFoundError:
        raise HubError(f"Hub repo {repo_id} has no {name}; it is not a vqexplore checkpoint") from None
    except hf_errors.HfHubHTTPError as e:
        raise HubError(f"the Hub refused {repo_id}: {str(e).splitlines()[0]}") from None
    except OSError as e:  # connection errors surface as OSError subclasses
        raise HubError(f"cannot reach the Hub for {repo_id} ({type(e).__name__}); connect to the internet "
                       f"or pass a local checkpoint folder") from None
    return files[0].parent


def url_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the host of ``url`` accepts a TCP connection within ``timeout`` seconds.

    Behind an HTTP(S) proxy a direct connection says nothing, so we answer True and let the
    real request decide."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                                       "all_proxy")):
        return True
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint (``HF_ENDPOINT``) can be reached; offline mode
    (``HF_HUB_OFFLINE``) counts as no. Probe before a call that would otherwise retry for
    ~25 s on a refused connection."""
    from huggingface_hub import constants

    return not constants.HF_HUB_OFFLINE and url_reachable(constants.ENDPOINT, timeout)


def check_safetensors(path: str | Path) -> dict:
    """Parse a safetensors header and check that the file holds every byte it announces.

    Returns the header (tensor name -> dtype/shape/offsets). Raises CheckpointError naming
    the file when it is missing, truncated or not safetensors at all.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("shorter than a safetensors header")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, 100 << 20):
                raise ValueError("header length beyond the end of the file")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: a checkpoint folder needs {CONFIG_NAME} "
                              f"and {WEIGHTS_NAME}") from None
    except (ValueError, UnicodeDecodeError, struct.error) as e:
        raise CheckpointError(f"{path} is not a valid safetensors file ({e}); re-save or re-download it") from None
    end = 0
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(meta["data_offsets"][1]))
        except (KeyError, TypeError, IndexError, ValueError):
            raise CheckpointError(f"{path} has a malformed header entry {key!r}; re-save or re-download it") from None
    if 8 + n + end != size:
        raise CheckpointError(f"{path} is truncated or corrupt ({size} bytes, header says {8 + n + end}); "
                              f"re-save or re-download it")
    return header


# The keys that give a checkpoint's tensors their shapes: config.json must state them (a default
# would silently build another model); keys added later may be absent in older checkpoints.
REQUIRED_CONFIG_KEYS = ("quantizer", "codebook_size", "code_dim", "in_channels")
# ... and those of its network (``arch``; checkpoints without one are SimpleCNN's)
REQUIRED_ARCH_KEYS = {"simplecnn": ("hidden_dim", "n_resblocks"),
                      "vqgan": ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "z_channels")}


def read_config(path: str | Path) -> dict:
    """Parse a checkpoint's config.json into a dict (VQModel's arguments; ``VQModel`` checks
    them). Raises CheckpointError naming the file when it is missing, not a JSON object, or lacks
    one of ``REQUIRED_CONFIG_KEYS`` or of its network's ``REQUIRED_ARCH_KEYS``."""
    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: a checkpoint folder needs {CONFIG_NAME} "
                              f"and {WEIGHTS_NAME}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the checkpoint is corrupt, "
                              "re-save or re-download it") from None
    except RecursionError:
        raise CheckpointError(f"{path} is nested too deeply to be a config; the checkpoint is corrupt, "
                              f"re-save or re-download it") from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise CheckpointError(f"{path} holds a value that cannot be read ({str(e)[:80]}); the checkpoint is "
                              f"corrupt, re-save or re-download it") from None
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read ({e.strerror or type(e).__name__}); "
                              f"check its permissions") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} must hold a JSON object of VQModel arguments")
    arch_keys = REQUIRED_ARCH_KEYS.get(cfg.get("arch", "simplecnn"), ())  # an unknown arch: VQModel names it
    missing = [key for key in (*REQUIRED_CONFIG_KEYS, *arch_keys) if key not in cfg]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; the checkpoint is incomplete, re-save or "
                              f"re-download it")
    return cfg


def read_metrics(checkpoint_dir: str | Path) -> dict | None:
    """The checkpoint's ``metrics.json`` (written by ``trainer eval``), or None."""
    path = Path(checkpoint_dir) / METRICS_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is not valid JSON; delete it and re-run `python -m trainer eval`") from None
    return data if isinstance(data, dict) else None


def read_run_metrics(run_dir: str | Path) -> list[dict]:
    """Rows of ``<run>/metrics.jsonl``; a partly written last line (run in progress) is skipped."""
    path = Path(run_dir) / RUN_METRICS_NAME
    rows = []
    if path.is_file():
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    return rows


_METRIC_NAMES = {k: METRIC[k].label for k in TABLE_METRICS}  # the registry: vqexplore.metricinfo


def model_card(config: dict, *, metrics: dict | None = None, dataset: str | None = None,
               command: str | None = None, repo_id: str | None = None, name: str | None = None,
               source: dict | None = None, license: str = "mit"):
    """A model card (``huggingface_hub.ModelCard``) with the config, the training data and the
    evaluation metrics as model-index metadata. ``dataset`` is free text; it is listed in the
    ``datasets`` metadata only when it is a Hub dataset id (``user/name``). ``source``: for a
    converted published tokenizer (``vqexplore.importers``), its kind, path, sha256 and licence;
    ``license``: the card's licence id."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    name = name or (repo_id.split("/")[-1] if repo_id else "vqexplore-tokenizer")
    hub_dataset = dataset.removeprefix("hf:") if dataset else None
    is_hub = hub_dataset and looks_like_repo_id(hub_dataset) and not Path(hub_dataset).exists()
    hub_dataset = hub_dataset if is_hub else None
    eval_results = []
    for key, label in _METRIC_NAMES.items():
        value = (metrics or {}).get(key)
        if isinstance(value, (int, float)):
            eval_results.append(EvalResult(
                task_type="image-to-image", task_name="Image reconstruction",
                dataset_type=dataset or "custom", dataset_name=dataset or "custom",
                metric_type=key, metric_name=label, metric_value=float(value)))
    data = ModelCardData(
        library_name="vqexplore", license=license, pipeline_tag="image-to-image",
        tags=["vqexplore", "image-tokenizer", "vector-quantization", str(config.get("quantizer", "vq"))],
        model_name=name, eval_results=eval_results or None,
        datasets=[hub_dataset] if hub_dataset else None)
    cfg_rows = "\n".join(f"| {label} | {value} |" for label, value in describe_config(config).items())
    metric_rows = "\n".join(
        f"| {label} | {_fmt(metrics[key])} |" for key, label in _METRIC_NAMES.items()
        if metrics and key in metrics and metrics[key] is not None)
    net = "VQGAN" if config.get("arch") == "vqgan" else "SimpleCNN"
    made = (f"converted from a published {source['kind']} checkpoint with "
            f"[vqexplore](https://github.com/vqexplore/vqexplore)" if source else
            "trained with [vqexplore](https://github.com/vqexplore/vqexplore)")
    body = [
        f"# {name}", "",
        f"An image tokenizer ({net} autoencoder with a vector-quantized bottleneck) {made}.", "",
        "```python", "import vqexplore", f"model = vqexplore.load({(repo_id or 'path/to/this/folder')!r})",
        "indices = model.encode(images)          # (B, 3, H, W) in [-1, 1] -> (B, H/f, W/f), f = model.downsample",
        "reconstruction = model.decode_indices(indices)", "```", "",
        "## Configuration", "", config_summary(config), "", "| setting | value |", "|---|---|", cfg_rows, "",
        "`config.json`:", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", "",
    ]
    if source:
        body += ["## Source", "", f"- published {source['kind']} checkpoint: `{source['path']}`"
                 + (f" (sha256 `{source['sha256']}`)" if source.get("sha256") else ""),
                 f"- licence: {source['licence']}; the weights keep their publisher's licence and terms",
                 f"- tensors left out: {source.get('dropped', 0)} (training loss / usage statistics)", ""]
    if dataset:
        body += ["## Training data", "", f"{dataset}", ""]
    if metric_rows:
        body += ["## Evaluation", ""]
        if (metrics or {}).get("protocol_description"):
            body += ["Measured under one evaluation protocol (`vqexplore.protocol`): "
                     f"{metrics['protocol_description']}.", ""]
        body += ["| metric | value |", "|---|---:|", metric_rows, ""]
    if command:
        body += ["## How it was made", "", "```", command, "```", ""]
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + "\n".join(body))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
