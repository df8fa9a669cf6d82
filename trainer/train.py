"""The training loop, top to bottom: processes, run folder, data, model, resume, loop.

One process: ``python -m trainer --cfg X.yaml``. Several: ``torchrun --nproc-per-node N -m
trainer --cfg X.yaml`` (DDP; gloo on CPU, nccl on GPU; the global batch ``train.batch_size`` is
split evenly across processes; only rank 0 writes files, logs and the progress bar).

Determinism: the model is initialised from ``train.seed``, every data item is a pure function of
(seed, epoch, index) and the data position is a function of the step, so a run killed at any
moment and resumed from its last checkpoint ends with the same weights as one never interrupted
(on CPU, same machine and thread count).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from vqexplore import VQModel
from vqexplore.data import describe_source, iter_batches, make_dataset, make_loader
from vqexplore.errors import ConfigError, VQExploreError
from vqexplore.hub import CHECKPOINTS_DIR, RUN_METRICS_NAME, checkpoint_dirname, list_checkpoints

from . import checkpoint as ckpt_io
from .config import Config, from_dict, resume_conflicts, validate


class TrainingDiverged(VQExploreError):
    """The loss became NaN or infinite."""


# ---------------------------------------------------------------------------------------------
# The step: what the benchmark times against a bare PyTorch loop
# ---------------------------------------------------------------------------------------------

@dataclass
class StepOutput:
    loss: Tensor                 # total loss (detached scalar)
    recon_loss: Tensor           # MSE(reconstruction, images) (detached scalar)
    losses: dict[str, Tensor]    # the quantizer's named losses (detached scalars)
    indices: Tensor              # (B, h, w) code ids


def train_step(model, optimizer: torch.optim.Optimizer, images: Tensor,
               autocast_dtype: torch.dtype | None = None) -> StepOutput:
    """One Adam step on loss = MSE(reconstruction, images) + sum of the quantizer's losses.

    images: (B, 3, H, W) in [-1, 1] on the model's device. ``autocast_dtype`` (e.g. bfloat16)
    runs the forward under autocast; the quantizers compute distances in float32 regardless.
    """
    with torch.autocast(images.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        out = model(images)
        recon_loss = F.mse_loss(out.reconstruction.float(), images.float())
        loss = recon_loss + sum(out.losses.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return StepOutput(loss.detach(), recon_loss.detach(), {k: v.detach() for k, v in out.losses.items()},
                      out.indices)


class Window:
    """Running sums of the losses and code counts between two log rows, kept on the device so
    that a step never waits for the host."""

    def __init__(self, codebook_size: int, device: torch.device):
        self.counts = torch.zeros(codebook_size, dtype=torch.long, device=device)
        self.sums: dict[str, Tensor] = {}
        self.reset()

    def reset(self) -> None:
        self.sums.clear()
        self.counts.zero_()
        self.n, self.images, self.t0 = 0, 0, time.perf_counter()

    def add(self, out: StepOutput, images: int) -> None:
        for key, value in (("loss", out.loss), ("recon_loss", out.recon_loss),
                           *((f"{k}_loss", v) for k, v in out.losses.items())):
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
        self.counts += torch.bincount(out.indices.flatten(), minlength=self.counts.numel())
        self.n += 1
        self.images += images

    def finite(self) -> bool:
        """False if any loss since the last reset was NaN or infinite (they propagate into the sum)."""
        return "loss" not in self.sums or bool(torch.isfinite(self.sums["loss"]))

    def summary(self) -> dict:
        """Mean losses, and codebook usage / perplexity of the codes chosen in the window."""
        means = {k: float(v) / max(self.n, 1) for k, v in self.sums.items()}
        return {**means, **_code_stats(self.counts)}


# ---------------------------------------------------------------------------------------------
# Processes and devices
# ---------------------------------------------------------------------------------------------

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device: cuda was asked for but no CUDA GPU is visible; use train.device=auto or cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device: mps was asked for but is not available; use train.device=auto or cpu")
    return device


def setup_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and join the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), pick_device(device_name)
    import torch.distributed as dist

    d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(device_name, d.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return d, device


def _all_true(flag: bool, d: Dist, device: torch.device) -> bool:
    """True on every rank only if ``flag`` is true on every rank."""
    if not d.enabled:
        return flag
    import torch.distributed as dist

    t = torch.tensor([0.0 if flag else 1.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() == 0)


def weights_sha256(model) -> str:
    """A hash of every weight and buffer (to compare ranks or runs)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Run folder: config, metrics.jsonl, TensorBoard, reconstruction grids
# ---------------------------------------------------------------------------------------------

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
        ckpt_io.write_text_atomic(self.path, "".join(line + "\n" for line in keep))

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
        folder = self.run_dir / "samples"
        folder.mkdir(exist_ok=True)
        path = folder / f"{checkpoint_dirname(step)}.png"
        save_image(grid, path)
        self.tb.add_image("val/reconstructions", grid, step)
        return path

    def close(self) -> None:
        self.file.close()
        self.tb.close()


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

def train(cfg: Config, *, resume: bool = False, command: str | None = None) -> Path:
    """Train (or resume) the run ``cfg.out_dir/cfg.name``; returns its folder.

    Raises ConfigError / DataError / CheckpointError for user errors, TrainingDiverged when the
    loss becomes NaN or infinite (the newest checkpoint on disk is the last good one).
    """
    if cfg.train.threads:
        # On a busy or small CPU, fewer threads than cores avoids OpenMP spin-waiting.
        torch.set_num_threads(cfg.train.threads)
    d, device = setup_distributed(cfg.train.device)
    try:
        return _train(cfg, d, device, resume, command)
    finally:
        if d.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _train(cfg: Config, d: Dist, device: torch.device, resume: bool, command: str | None) -> Path:
    t = cfg.train
    run_dir = cfg.run_dir
    if t.batch_size % d.world:
        raise ConfigError(f"train.batch_size: {t.batch_size} does not split evenly across {d.world} processes")
    batch_per_rank = t.batch_size // d.world
    autocast_dtype = torch.bfloat16 if t.precision == "bf16" else None

    # -- the run folder: a fresh run must not silently overwrite an older one -------------------
    resume_from = None
    if resume:
        ckpt_io.clean_temporaries(run_dir) if d.main else None
        resume_from = ckpt_io.latest_resumable(run_dir)
        saved_cfg = run_dir / "config.yaml"
        if resume_from is not None and saved_cfg.is_file():
            import yaml

            conflicts = resume_conflicts(validate(from_dict(yaml.safe_load(saved_cfg.read_text()))), cfg)
            if conflicts:
                raise ConfigError(f"{conflicts[0]}: differs from the run being resumed ({saved_cfg}); "
                                  f"resume with the same value or start a new run with name=...")
    elif list_checkpoints(run_dir):
        raise ConfigError(f"name: {run_dir} already holds checkpoints; pass --resume to continue it, "
                          f"or choose another name=... (or delete the folder)")

    # -- data ----------------------------------------------------------------------------------
    train_set = make_dataset(cfg.data.train, "train", cfg.data.size, seed=t.seed, in_memory=cfg.data.in_memory)
    if len(train_set) < t.batch_size:
        raise ConfigError(f"train.batch_size: {t.batch_size} is larger than the training set "
                          f"({len(train_set)} images); lower it")
    loader = make_loader(train_set, batch_per_rank, shuffle=True, seed=t.seed, num_workers=cfg.data.num_workers,
                         drop_last=True, distributed=d.enabled)
    batches_per_epoch = len(loader)
    val_images = grid_images = None
    if d.main:
        val_set = make_dataset(cfg.data.val, "val", cfg.data.size, seed=t.seed, in_memory=cfg.data.in_memory)
        n_val = min(t.val_images, len(val_set))
        # The fixed validation subset, decoded once (the first n_val items of the val split).
        val_images = torch.stack([val_set[i] for i in range(n_val)])
        grid_images = val_images[: t.grid_images].to(device)

    # -- model and optimizer ---------------------------------------------------------------------
    torch.manual_seed(t.seed)
    model = VQModel(**cfg.model.kwargs()).to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr)
    step, elapsed = 0, 0.0
    if resume_from is not None:
        state = ckpt_io.load_training_state(resume_from, model, optimizer)
        step, elapsed = int(state["step"]), float(state.get("elapsed", 0.0))
        if d.main:
            print(f"resuming {run_dir} from {resume_from.name} (step {step})", file=sys.stderr)
    elif resume and d.main:
        print(f"--resume: {run_dir} has no checkpoint yet; starting from step 0", file=sys.stderr)
    step_model = model
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        step_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if t.compile:
        step_model = torch.compile(step_model)
    batches = iter_batches(loader, start_step=step)

    # -- run folder (rank 0) ---------------------------------------------------------------------
    log = None
    data_description = describe_source(cfg.data.train)
    card = {"dataset": data_description, "command": command}
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if step == 0:  # a fresh start: forget metrics/events of an attempt that never checkpointed
            for old in run_dir.glob("events.out.tfevents.*"):
                old.unlink()
            (run_dir / RUN_METRICS_NAME).unlink(missing_ok=True)
        ckpt_io.write_text_atomic(run_dir / "config.yaml", cfg.to_yaml())
        log = RunLog(run_dir, step)
        print(f"run {run_dir}: {sum(p.numel() for p in model.parameters()):,} parameters, "
              f"{cfg.model.quantizer} K={model.codebook_size} D={model.code_dim}, data {data_description}, "
              f"device {device}, {d.world} process(es), batch {t.batch_size}", file=sys.stderr)

    def save(at_step: int) -> Path:
        state = {"epoch": at_step // batches_per_epoch, "batch_in_epoch": at_step % batches_per_epoch,
                 "batches_per_epoch": batches_per_epoch, "elapsed": elapsed, "command": command,
                 "data": data_description, "world_size": d.world}
        return ckpt_io.save_checkpoint(run_dir, at_step, model, optimizer, state, card=card, keep_last=t.keep_last)

    def validate_now(at_step: int) -> dict:
        from vqexplore.metrics import evaluate

        chunks = val_images.split(cfg.eval.batch_size)
        metrics = evaluate(model, chunks, device=device)
        if grid_images.shape[0]:
            with torch.no_grad():
                model.eval()
                recon = model(grid_images).reconstruction
                model.train()
            log.grid(at_step, grid_images, recon)
        row = {"step": at_step, "split": "val", **metrics, "time": time.time()}
        log.write(row)
        return row

    # -- the loop --------------------------------------------------------------------------------
    from tqdm.auto import tqdm

    bar = tqdm(total=t.steps, initial=step, disable=not d.main, dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 10.0, desc=cfg.name)
    per_step_check = device.type == "cpu" and not d.enabled  # a free sync on CPU: stop at once
    window = Window(model.codebook_size, device)
    last_val: dict | None = None
    model.train()
    try:
        while step < t.steps:
            images = next(batches).to(device, non_blocking=True)
            if t.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            out = train_step(step_model, optimizer, images, autocast_dtype)
            step += 1
            window.add(out, images.shape[0] * d.world)

            is_last = step == t.steps
            do_log = step % t.log_every == 0 or is_last
            do_val = d.main and ((t.val_every and step % t.val_every == 0) or is_last)
            do_ckpt = (t.ckpt_every and step % t.ckpt_every == 0) or is_last
            if per_step_check or do_log or do_ckpt:
                # A NaN anywhere in the window propagates into the window's sum.
                if not _all_true(window.finite(), d, device):
                    last = ckpt_io.latest_resumable(run_dir)
                    where = f"{last}" if last else "none was written yet"
                    raise TrainingDiverged(
                        f"the loss became {float(out.loss)} at step {step} (or within the last "
                        f"{window.n} steps); training stopped, last good checkpoint: {where}; "
                        f"lower train.lr (now {t.lr:g}) or check the data")
            if do_log:
                if d.enabled:
                    import torch.distributed as dist

                    dist.all_reduce(window.counts)  # usage over the whole global batch
                seconds = time.perf_counter() - window.t0
                elapsed += seconds
                row = {"step": step, "split": "train", "epoch": (step - 1) // batches_per_epoch,
                       **window.summary(), "lr": optimizer.param_groups[0]["lr"],
                       "images_per_s": window.images / max(seconds, 1e-9), "time": time.time(),
                       "elapsed": elapsed}
                if d.main:
                    log.write(row)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", usage=f"{row['usage']:.1%}",
                                    ppl=f"{row['perplexity']:.0f}", refresh=False)
                window.reset()
            if do_val:
                last_val = validate_now(step)
            if do_ckpt and d.main:
                save(step)
            if do_log or do_val or do_ckpt:
                window.t0 = time.perf_counter()  # images/s counts training time only
            bar.update(1)
    except KeyboardInterrupt:
        last = ckpt_io.latest_resumable(run_dir) if d.main else None
        raise VQExploreError(f"interrupted at step {step}; continue with --resume "
                             f"(from {last.name if last else 'step 0'})") from None
    finally:
        bar.close()
        if log is not None:
            log.close()

    if os.environ.get("VQEXPLORE_PRINT_WEIGHTS_HASH"):  # for tests: compare ranks / runs
        print(f"rank {d.rank} weights sha256 {weights_sha256(model)}", flush=True)
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()  # rank 0 has finished writing when every process returns
    if d.main:
        final = run_dir / CHECKPOINTS_DIR / checkpoint_dirname(step)
        summary = ""
        if last_val is not None:
            summary = (f": val usage {last_val['usage']:.1%}, perplexity {last_val['perplexity']:.1f}, "
                       f"PSNR {last_val['psnr']:.2f} dB, SSIM {last_val['ssim']:.4f} "
                       f"on {last_val['num_images']} images")
        print(f"done: {final}{summary}", file=sys.stderr)
    return run_dir


def _code_stats(counts: Tensor) -> dict:
    """Usage and perplexity of a (K,) code count (an empty count gives zeros)."""
    from vqexplore.metrics import codebook_stats

    counts = counts.cpu()
    if int(counts.sum()) == 0:
        return {"usage": 0.0, "perplexity": 0.0}
    s = codebook_stats(counts)
    return {"usage": s.usage, "perplexity": s.perplexity}
