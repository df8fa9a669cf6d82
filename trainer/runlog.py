"""The run folder's logs: ``metrics.jsonl``, TensorBoard events and reconstruction grids (rank 0)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from vqexplore.hub import RUN_METRICS_NAME
from vqexplore.runlayout import RunLayout
from vqexplore.utils import write_atomic


class RunLog:
    """metrics.jsonl + TensorBoard + PNG grids of one run (rank 0 only)."""

    def __init__(self, run_dir: Path, start_step: int):
        self.run_dir = run_dir
        self.path = run_dir / RUN_METRICS_NAME
        self._truncate_after(start_step)
        self.file = open(self.path, "a", encoding="utf-8")
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events a killed run logged after the checkpoint we resume from.
        self.tb = SummaryWriter(str(run_dir), purge_step=start_step if start_step > 0 else None)

    def _truncate_after(self, step: int) -> None:
        """Drop rows beyond ``step`` (logged by a killed run after its last checkpoint)."""
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            if isinstance(row, dict) and row.get("step", 0) <= step:
                keep.append(json.dumps(row))
        write_atomic(self.path, "".join(line + "\n" for line in keep))

    def write(self, row: dict) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        prefix = row["split"]
        for key, value in row.items():
            if key not in ("step", "split", "time", "epoch") and isinstance(value, (int, float)) \
                    and not isinstance(value, bool):
                self.tb.add_scalar(f"{prefix}/{key}", value, row["step"])

    def grid(self, step: int, originals: Tensor, reconstructions: Tensor) -> Path:
        """Originals (top row) over reconstructions (bottom row), PNG + TensorBoard."""
        from torchvision.utils import make_grid, save_image

        images = torch.cat([originals, reconstructions]).float().add(1).div(2).clamp(0, 1).cpu()
        grid = make_grid(images, nrow=originals.shape[0], padding=2, pad_value=1.0)
        path = RunLayout(self.run_dir).sample(step)
        path.parent.mkdir(exist_ok=True)
        save_image(grid, path)
        self.tb.add_image("val/reconstructions", grid, step)
        return path

    def close(self) -> None:
        self.file.close()
        self.tb.close()
