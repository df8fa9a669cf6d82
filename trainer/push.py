"""``python -m trainer push``: publish a checkpoint folder on the Hugging Face Hub.

The upload is staged in a temporary folder (weights, config, metrics and a fresh model card with
model-index metadata), so the local checkpoint is never modified, whether the push works or not.
Optimizer state (trainer_state.*) is not uploaded.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from vqexplore.errors import CheckpointError, HubError
from vqexplore.hub import (CONFIG_NAME, METRICS_NAME, WEIGHTS_NAME, looks_like_repo_id, model_card, resolve,
                          url_reachable)

from .evaluate import training_info
from .runfacts import card_kwargs

UPLOADED = (CONFIG_NAME, WEIGHTS_NAME, METRICS_NAME)


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def push_checkpoint(ckpt: str, repo: str, *, private: bool = False, token: str | None = None,
                    commit_message: str | None = None) -> str:
    """Upload ``ckpt`` (a checkpoint or run folder) to the Hub repo ``repo``; returns its URL."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub import errors as hf_errors

    if not looks_like_repo_id(repo):
        raise HubError(f"--repo {repo!r} is not a Hub repo id; write it as user/name")
    src = resolve(ckpt)
    if src.kind == "hub":
        raise CheckpointError(f"{ckpt} is already a Hub repo; pass a local checkpoint folder")
    token = token or get_token()
    endpoint = _endpoint()
    if not token:
        raise HubError("no Hugging Face token: run `hf auth login` or set HF_TOKEN, then push again")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise HubError("HF_HUB_OFFLINE is set; unset it and connect to the internet to push")
    if not url_reachable(endpoint, timeout=5.0):
        raise HubError(f"cannot reach the Hugging Face Hub at {endpoint}; connect to the internet "
                       f"(or fix HF_ENDPOINT) and push again")

    metrics = None
    if (src.path / METRICS_NAME).is_file():
        try:
            metrics = json.loads((src.path / METRICS_NAME).read_text())
        except json.JSONDecodeError:
            raise CheckpointError(f"{src.path / METRICS_NAME} is not valid JSON; "
                                  "re-run `python -m trainer eval`") from None
    config = json.loads((src.path / CONFIG_NAME).read_text())
    facts = card_kwargs(training_info(src.path))
    dataset = (metrics or {}).get("data_description") or facts["dataset"]
    card = model_card(config, metrics=metrics, dataset=dataset, command=facts["command"], repo_id=repo)

    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="vqexplore-push-") as staging:
        staging = Path(staging)
        for name in UPLOADED:
            if (src.path / name).is_file():
                shutil.copy2(src.path / name, staging / name)
        card.save(staging / "README.md")
        try:
            url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
            api.upload_folder(repo_id=repo, folder_path=str(staging), repo_type="model",
                              commit_message=commit_message or f"Upload {src.name} with vqexplore")
        except hf_errors.HfHubHTTPError as e:
            first = str(e).splitlines()[0]
            raise HubError(f"the Hub refused the push to {repo}: {first}; check your token's write access") from None
        except (OSError, ConnectionError) as e:
            raise HubError(f"cannot reach the Hugging Face Hub at {endpoint} ({type(e).__name__}); "
                           f"connect to the internet and push again") from None
    return str(url)
