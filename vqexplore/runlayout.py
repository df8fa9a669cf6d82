"""The one owner of the names of a run folder and of the files a checkpoint folder holds besides
its weights.

A run folder (``runs/<name>/``, written by ``python -m trainer``)::

    config.yaml                     the run's effective config (RunLayout.config)
    metrics.jsonl                   one JSON row per log / validation step (RunLayout.metrics)
    events.out.tfevents.*           TensorBoard (RunLayout.events())
    samples/step-XXXXXXXX.png       reconstruction grids (RunLayout.sample(step))
    checkpoints/step-XXXXXXXX/      checkpoint folders (RunLayout.checkpoint(step))

A checkpoint folder holds ``config.json`` + ``model.safetensors`` (the format, owned by
``vqexplore.hub``) and, when the trainer or its commands wrote them::

    metrics.json                    ``trainer eval`` results (EVAL_METRICS)
    training.json                   how it was made: run name, data, step, commands (FACTS)
    trainer_state.json              resumable state: step, data position, the run's config (STATE)
    ema/                            the weight EMA, itself a checkpoint folder (EMA_DIR)
    projection.npz                  the dashboard's default codebook projection, for these weights
                                    (PROJECTION_VIEW; ``export`` and ``eval`` write it)
    evaluation.npz                  usage counts, PSNR and SSIM under the default evaluation protocol,
                                    for these weights (EVALUATION_VIEW; ``export`` and ``eval`` write it)

Every reader and writer in the library, the trainer, the apps, the benchmarks and the scripts
takes these names from here (``tests/test_layers.py`` fails on a copy spelled elsewhere).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CONFIG_YAML = "config.yaml"
RUN_METRICS = "metrics.jsonl"
EVENTS_GLOB = "events.out.tfevents.*"
SAMPLES_DIR = "samples"
CHECKPOINTS_DIR = "checkpoints"
EVAL_METRICS = "metrics.json"
FACTS = "training.json"
STATE = "trainer_state.json"
EMA_DIR = "ema"
PROJECTION_VIEW = "projection.npz"
EVALUATION_VIEW = "evaluation.npz"
_STEP_RE = re.compile(r"^step-(\d+)$")

# The repository's own folder of demo checkpoints (the dashboard's, the demo's and the benches' default).
DEMO_CHECKPOINTS = Path(__file__).resolve().parents[1] / CHECKPOINTS_DIR


def checkpoint_dirname(step: int) -> str:
    """The folder name of the checkpoint at ``step`` inside ``<run>/checkpoints/``."""
    return f"step-{int(step):08d}"


def step_of(name: str) -> int | None:
    """The step of a checkpoint folder name (``step-00000300`` -> 300), None for any other name."""
    m = _STEP_RE.match(name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run folder (nothing is created or read here)."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG_YAML

    @property
    def metrics(self) -> Path:
        return self.root / RUN_METRICS

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    @property
    def samples(self) -> Path:
        return self.root / SAMPLES_DIR

    def events(self) -> list[Path]:
        """TensorBoard event files of the run."""
        return sorted(self.root.glob(EVENTS_GLOB))

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / checkpoint_dirname(step)

    def sample(self, step: int) -> Path:
        return self.samples / f"{checkpoint_dirname(step)}.png"

    @staticmethod
    def of_checkpoint(ckpt: str | Path) -> RunLayout | None:
        """The run a checkpoint folder (``<run>/checkpoints/step-N``) belongs to, else None."""
        ckpt = Path(ckpt)
        if step_of(ckpt.name) is not None and ckpt.parent.name == CHECKPOINTS_DIR:
            return RunLayout(ckpt.parent.parent)
        return None


@dataclass(frozen=True)
class CheckpointFiles:
    """Paths of the trainer's files inside one checkpoint folder."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def metrics(self) -> Path:
        return self.root / EVAL_METRICS

    @property
    def facts(self) -> Path:
        return self.root / FACTS

    @property
    def state(self) -> Path:
        return self.root / STATE

    @property
    def ema(self) -> Path:
        return self.root / EMA_DIR

    @property
    def projection(self) -> Path:
        """The stored default projection of the codebook (``vqexplore.projection``)."""
        return self.root / PROJECTION_VIEW

    @property
    def evaluation(self) -> Path:
        """The stored evaluation under the default protocol (``vqexplore.protocol``)."""
        return self.root / EVALUATION_VIEW


__all__ = ["CONFIG_YAML", "RUN_METRICS", "EVENTS_GLOB", "SAMPLES_DIR", "CHECKPOINTS_DIR", "EVAL_METRICS", "FACTS",
           "STATE", "EMA_DIR", "PROJECTION_VIEW", "EVALUATION_VIEW", "DEMO_CHECKPOINTS", "checkpoint_dirname",
           "step_of", "RunLayout", "CheckpointFiles"]
