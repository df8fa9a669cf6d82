"""The training run, top to bottom: open (or resume) the run, data, model and optimiser, the
loop, the final report.

One process: ``python -m trainer --cfg X.yaml``. Several: ``torchrun --nproc-per-node N -m
trainer --cfg X.yaml`` (DDP; gloo on CPU, nccl on GPU; the global batch ``train.batch_size`` is
split evenly across processes; only rank 0 writes files, logs and the progress bar).

Determinism: the model is initialised from ``train.seed``, every data item is a pure function of
(seed, epoch, index) and the data position is a function of the step, so a run killed at any
moment and resumed from its last checkpoint ends with the same weights as one never interrupted
(on CPU, same machine and thread count).
"""
from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vqexplore import VQModel
from vqexplore.data import describe_source, iter_batches, make_dataset, make_loader
from vqexplore.errors import CheckpointError, ConfigError, DataError, VQExploreError
from vqexplore.hub import CHECKPOINTS_DIR, EMA_DIR, checkpoint_dirname, list_checkpoints
from vqexplore.runlayout import RunLayout
from vqexplore.utils import eval_mode, write_atomic

from . import checkpoint as ckpt_io
from . import distributed
from .config import Config, from_dict, resume_conflicts
from .distributed import Dist
from .runfacts import facts
from .runlock import RunLock
from .runlog import RunLog
from .recipe import WeightEMA, learning_rate, set_learning_rate
from .step import GANStage, StepOutput, Window, compile_for_training, train_step, vqgan_train_step


class TrainingDiverged(VQExploreError):
    """The loss became NaN or infinite."""


def train(cfg: Config, *, resume: bool = False, command: str | None = None) -> Path:
    """Train (or resume) the run ``cfg.out_dir/cfg.name``; returns its folder.

    Raises ConfigError / DataError / CheckpointError for user errors, TrainingDiverged when the
    loss becomes NaN or infinite (the newest checkpoint on disk is the last good one).
    """
    train_model(cfg, resume=resume, command=command)
    return cfg.run_dir


def train_model(cfg: Config, *, resume: bool = False, command: str | None = None) -> VQModel:
    """:func:`train`, returning the trained model (every process holds the same weights)."""
    return train_run(cfg, resume=resume, command=command).model


def train_run(cfg: Config, *, resume: bool = False, command: str | None = None) -> "Run":
    """:func:`train`, returning the finished :class:`Run` (its model, optimiser, discriminator)."""
    if cfg.train.threads:
        # On a busy or small CPU, fewer threads than cores avoids OpenMP spin-waiting.
        torch.set_num_threads(cfg.train.threads)
    d, device = distributed.setup(cfg.train.device)
    if cfg.train.deterministic:
        use_deterministic_kernels()
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed image size: let cuDNN pick the fastest kernels
    if device.type == "cuda":
        if cfg.train.precision == "bf16":
            # bf16 runs accept reduced precision; TF32 speeds up the float32 distance matmuls too.
            torch.backends.cuda.matmul.allow_tf32 = True
    # Rank 0 holds the run folder for the run's life (only it writes there); taken before the
    # folder is inspected, so two trainers started together cannot both see it free.
    lock = RunLock(cfg.run_dir, command) if d.main else None
    try:
        if lock is not None:
            lock.acquire()
        resume_from, saved = open_run(cfg, d, resume)
        data = load_data(cfg, d, device)
        model, optimizer = build_model(cfg, device)
        if cfg.train.init_from and resume_from is None:
            init_weights(model, cfg.train.init_from, cfg)
        stage = build_gan_stage(cfg, device)
        run = Run(cfg, d, device, command, model, optimizer, data, stage)
        if resume_from is not None:
            run.restore(resume_from, saved)
        elif resume and d.main:
            print(f"--resume: {cfg.run_dir} has no checkpoint yet; starting from step 0", file=sys.stderr)
        run.loop()
        run.finish()
        return run
    finally:
        if lock is not None:
            lock.release()
        distributed.teardown(d)


def use_deterministic_kernels() -> None:
    """``train.deterministic``: the same kernels in the same order on every run, so that GPU runs
    (and resumes) repeat bit for bit, at some cost in speed. CPU training is deterministic
    without it. cuBLAS needs a fixed workspace (read when its handle is made, at the first
    matmul); ops without a deterministic CUDA kernel warn instead of stopping the run (integer
    counts such as code usage are exact however they are summed)."""
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


# ---------------------------------------------------------------------------------------------
# 1. Open the run folder: a fresh run must not silently overwrite an older one
# ---------------------------------------------------------------------------------------------

def open_run(cfg: Config, d: Dist, resume: bool) -> tuple[Path | None, dict]:
    """Check the run folder; return the checkpoint to resume from (None: start at step 0) and
    its trainer state (``{}`` when none)."""
    if cfg.train.batch_size % d.world:
        raise ConfigError(f"train.batch_size: {cfg.train.batch_size} does not split evenly across "
                          f"{d.world} processes")
    run_dir = cfg.run_dir
    if not resume:
        if list_checkpoints(run_dir):
            raise ConfigError(f"name: {run_dir} already holds checkpoints; pass --resume to continue it, "
                              f"or choose another name=... (or delete the folder)")
        return None, {}
    if d.main:
        ckpt_io.clean_temporaries(run_dir)
    resume_from = ckpt_io.latest_resumable(run_dir)
    if resume_from is None:
        return None, {}
    saved = ckpt_io.read_training_state(resume_from)
    check_resume(cfg, resume_from, saved)
    return resume_from, saved


def check_resume(cfg: Config, ckpt: Path, saved: dict) -> None:
    """The command's config against the one that made ``ckpt``, which the checkpoint itself
    records (``trainer_state.json``; ``config.json`` for the model), so that a run cannot be
    continued with other settings even when ``config.yaml`` was deleted or edited. Checkpoints
    written before the trainer recorded its config fall back to ``config.yaml``."""
    from vqexplore.hub import CONFIG_NAME, read_config
    from vqexplore.models import VQModel

    recorded, where = saved.get("config"), ckpt / ckpt_io.STATE_JSON
    if recorded is None:
        recorded, where = _saved_config_yaml(cfg.run_dir), RunLayout(cfg.run_dir).config
    conflicts = []
    if recorded is not None:
        try:
            previous = from_dict(recorded)
        except ConfigError as e:
            raise CheckpointError(f"{where} records a config this trainer cannot read ({e}); "
                                  f"start a new run with name=...") from None
        conflicts = resume_conflicts(previous, cfg)
    if not conflicts:  # the weights' own config.json: every model key must match
        try:
            model_cfg = VQModel.check_config(read_config(ckpt / CONFIG_NAME))
        except ConfigError as e:
            raise CheckpointError(f"{ckpt / CONFIG_NAME} is not a valid model config ({e}); delete this "
                                  f"checkpoint to resume from the one before") from None
        unrecorded = {"resolution"} if model_cfg.get("resolution") is None else set()  # older checkpoints
        conflicts = [f"model.{k}" for k in sorted(set(model_cfg) | set(cfg.model))
                     if k not in unrecorded and model_cfg.get(k) != cfg.model.get(k)]
        where = ckpt / CONFIG_NAME
    if conflicts:
        raise ConfigError(f"{conflicts[0]}: differs from the run being resumed (recorded in {where}); "
                          f"resume with the same value or start a new run with name=...")


def _saved_config_yaml(run_dir: Path) -> dict | None:
    """``run_dir/config.yaml`` as a dict (None when absent); unreadable is one clear error."""
    import yaml

    path = RunLayout(run_dir).config
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is corrupt and the checkpoints predate recorded configs; restore it "
                              f"or start a new run with name=...") from None
    return raw if isinstance(raw, dict) else None


# ---------------------------------------------------------------------------------------------
# 2. Data
# ---------------------------------------------------------------------------------------------

@dataclass
class Data:
    batches: Callable[[int], Iterator[Tensor]]  # batches(step) -> this process's share of every
                                          # global batch from ``step`` on (a pure function of it)
    batches_per_epoch: int
    description: str                      # the training source in words (cards, logs)
    val_images: Tensor | None             # (N, 3, S, S) in [-1, 1], the fixed validation subset (rank 0)
    grid_images: Tensor | None            # (G, 3, S, S) on the device, for the reconstruction grid (rank 0)


def load_data(cfg: Config, d: Dist, device: torch.device) -> Data:
    t = cfg.train
    train_set = make_dataset(cfg.data.train, "train", cfg.data.size, seed=t.seed, in_memory=cfg.data.in_memory)
    if len(train_set) < t.batch_size:
        raise ConfigError(f"train.batch_size: {t.batch_size} is larger than the training set "
                          f"({len(train_set)} images); lower it")
    per_rank = t.batch_size // d.world
    if _use_device_crops(cfg, device):
        # PIL decodes ~1k crops/s per core, far below what one GPU trains on: cut them there.
        from vqexplore.data.corpus import PhotoStack, photo_arrays

        stack = PhotoStack(photo_arrays("train"), device)
        batches = functools.partial(_device_crops, stack, per_rank, cfg.data.size, t.seed, d.rank)
        per_epoch = max(len(train_set) // t.batch_size, 1)
    else:
        loader = make_loader(train_set, per_rank, shuffle=True, seed=t.seed,
                             num_workers=cfg.data.num_workers, drop_last=True, distributed=d.enabled)
        batches, per_epoch = functools.partial(iter_batches, loader), len(loader)
    val_images = grid_images = None
    if d.main:
        val_set = make_dataset(cfg.data.val, "val", cfg.data.size, seed=t.seed, in_memory=cfg.data.in_memory)
        if len(val_set) == 0:
            raise DataError(f"data.val: {cfg.data.val} holds no validation images; point data.val at a "
                            f"source with images (e.g. data.val=builtin)")
        # The fixed validation subset, decoded once (the first val_images items of the val split).
        val_images = torch.stack([val_set[i] for i in range(min(t.val_images, len(val_set)))])
        grid_images = val_images[: t.grid_images].to(device)
    return Data(batches, per_epoch, describe_source(cfg.data.train), val_images, grid_images)


def _use_device_crops(cfg: Config, device: torch.device) -> bool:
    if cfg.data.device_crops is None:
        return cfg.data.train == "photos" and device.type == "cuda"
    if cfg.data.device_crops and cfg.data.train != "photos":
        raise ConfigError(f"data.device_crops: only the photos source cuts crops on the device, not "
                          f"{cfg.data.train!r}; set it to null")
    return cfg.data.device_crops


def _device_crops(stack, per_rank: int, size: int, seed: int, rank: int, start_step: int) -> Iterator[Tensor]:
    """Batch ``step`` of rank ``rank`` is a pure function of (seed, step, rank): resume is exact."""
    step = start_step
    while True:
        yield stack.crops(per_rank, size, np.random.default_rng([seed, step, rank]))
        step += 1


# ---------------------------------------------------------------------------------------------
# 3. Model and optimiser
# ---------------------------------------------------------------------------------------------

def build_model(cfg: Config, device: torch.device) -> tuple[VQModel, torch.optim.Optimizer]:
    """The model, initialised from ``train.seed``, and its Adam optimiser."""
    torch.manual_seed(cfg.train.seed)
    model = VQModel.from_config(cfg.model).to(device)  # validated once, by the config reader
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, torch.optim.Adam(model.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas))


def init_weights(model: VQModel, source: str, cfg: Config) -> None:
    """``train.init_from``: copy a trained tokenizer's weights and buffers into ``model``; its
    model config must be the run's (every key its config.json records)."""
    import vqexplore

    src = vqexplore.load(source)
    ours = dict(cfg.model)
    for key, value in src.config.items():
        if ours.get(key) != value:
            raise ConfigError(f"train.init_from: {source} has model.{key} = {value!r}, the config says "
                              f"{ours.get(key)!r}; set model.{key} to {value!r} or start from another checkpoint")
    with torch.no_grad():
        model.load_state_dict(src.state_dict())


def build_gan_stage(cfg: Config, device: torch.device) -> GANStage | None:
    """The VQGAN stage's perceptual loss and PatchGAN discriminator with its own Adam (None for the
    study's MSE loss). The discriminator is initialised from ``train.seed + 1`` in a forked RNG, so
    the generator's random stream is the same with or without it."""
    loss = cfg.loss
    if loss.plain:
        return None
    from vqexplore.gan import PatchDiscriminator, PerceptualLoss

    stage = GANStage(loss)
    if loss.lpips_weight > 0:
        stage.perceptual = PerceptualLoss(loss.lpips_weights, pretrained_backbone=not loss.lpips_random).to(device)
    if loss.gan:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed + 1)
            disc = PatchDiscriminator(cfg.model.in_channels, loss.disc_width, loss.disc_layers)
        disc = disc.to(device)
        if cfg.train.channels_last:
            disc = disc.to(memory_format=torch.channels_last)
        stage.disc = stage.disc_module = disc
        stage.disc_optimizer = torch.optim.Adam(disc.parameters(), lr=loss.disc_lr, betas=tuple(loss.disc_betas))
    return stage


# ---------------------------------------------------------------------------------------------
# 4. The loop, and 5. the final report
# ---------------------------------------------------------------------------------------------

class Run:
    """One training run in progress: what the loop reads and the state it advances."""

    def __init__(self, cfg: Config, d: Dist, device: torch.device, command: str | None,
                 model: VQModel, optimizer: torch.optim.Optimizer, data: Data, stage: GANStage | None = None):
        self.cfg, self.t, self.d, self.device, self.command = cfg, cfg.train, d, device, command
        self.model, self.optimizer, self.data, self.stage = model, optimizer, data, stage
        self.step, self.elapsed = 0, 0.0      # elapsed: training seconds (validation, saving excluded)
        self.last_val: dict | None = None     # the newest validation row
        self.last_val_ema: dict | None = None  # ... of the weight EMA (train.ema_decay > 0)
        self.autocast = torch.bfloat16 if self.t.precision == "bf16" else None
        self.ema = WeightEMA(model, self.t.ema_decay) if self.t.ema_decay > 0 else None

    def restore(self, ckpt: Path, saved: dict) -> None:
        """Weights, optimiser, RNG and position from a resumable checkpoint."""
        per_epoch = saved.get("batches_per_epoch")
        if per_epoch is not None and per_epoch != self.data.batches_per_epoch:
            raise ConfigError(f"data.train: now gives {self.data.batches_per_epoch} batches per epoch, the run "
                              f"being resumed had {per_epoch} ({ckpt / ckpt_io.STATE_JSON}); its data changed, "
                              f"so its position in the data cannot be kept: restore the data or start a new run "
                              f"with name=...")
        disc = self.stage.disc_module if self.stage else None
        state = ckpt_io.load_training_state(ckpt, self.model, self.optimizer,
                                            ema_model=self.ema.model if self.ema else None, disc=disc,
                                            disc_optimizer=self.stage.disc_optimizer if self.stage else None)
        self.step, self.elapsed = int(state["step"]), float(state.get("elapsed", 0.0))
        if self.d.main:
            print(f"resuming {self.cfg.run_dir} from {ckpt.name} (step {self.step})", file=sys.stderr)

    def loop(self) -> None:
        """Train from ``self.step`` to ``train.steps``: log, validate and checkpoint on schedule."""
        from tqdm.auto import tqdm

        t, d = self.t, self.d
        # What the step runs: DDP around the model, then torch.compile around that (train.compile);
        # self.model stays the plain module that is saved, averaged (EMA) and validated.
        step_model = distributed.wrap(self.model, d, self.device)
        if t.compile:
            step_model = compile_for_training(step_model)
        stage = self.stage
        if stage is not None and stage.disc_module is not None:
            stage.disc = distributed.wrap(stage.disc_module, d, self.device)
            if t.compile:
                stage.disc, stage.disc_gen = compile_for_training(stage.disc), compile_for_training(stage.disc_module)
            stage.disc_module.train()
        batches = self.data.batches(self.step)
        log = self._open_log() if d.main else None
        bar = tqdm(total=t.steps, initial=self.step, disable=not d.main, dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 10.0, desc=self.cfg.name)
        per_step_check = self.device.type == "cpu" and not d.enabled  # a free sync on CPU: stop at once
        window = Window(self.model.codebook_size, self.device)
        self.model.train()
        try:
            while self.step < t.steps:
                images = next(batches).to(self.device, non_blocking=True)
                if t.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                set_learning_rate(self.optimizer, learning_rate(
                    self.step, lr=t.lr, steps=t.steps, schedule=t.lr_schedule,
                    warmup_steps=t.warmup_steps, min_lr=t.min_lr))
                if stage is None:
                    out = train_step(step_model, self.optimizer, images, self.autocast, t.grad_clip)
                else:
                    adversarial = stage.disc is not None and self.step >= self.cfg.loss.disc_start
                    out = vqgan_train_step(step_model, self.optimizer, images, stage, adversarial,
                                           self.autocast, t.grad_clip)
                if self.ema is not None:
                    self.ema.update(self.model)
                self.step += 1
                window.add(out, images.shape[0] * d.world)

                step, is_last = self.step, self.step == t.steps
                do_log = step % t.log_every == 0 or is_last
                do_val = d.main and ((t.val_every and step % t.val_every == 0) or is_last)
                do_ckpt = (t.ckpt_every and step % t.ckpt_every == 0) or is_last
                if per_step_check or do_log or do_ckpt:
                    self._stop_if_diverged(window, out)
                if do_log:
                    self._log_train(window, log, bar)
                if do_val:
                    self.last_val = self._validate(log)
                if do_ckpt and d.main:
                    self._save()
                if do_log or do_val or do_ckpt:
                    window.t0 = time.perf_counter()  # images/s counts training time only
                bar.update(1)
        except KeyboardInterrupt:
            last = ckpt_io.latest_resumable(self.cfg.run_dir) if d.main else None
            raise VQExploreError(f"interrupted at step {self.step}; continue with --resume "
                                 f"(from {last.name if last else 'step 0'})") from None
        finally:
            bar.close()
            if log is not None:
                log.close()

    def finish(self) -> None:
        """Wait for rank 0's files, then print where the final checkpoint is and how it scores."""
        distributed.barrier(self.d)
        if not self.d.main:
            return
        final = self.cfg.run_dir / CHECKPOINTS_DIR / checkpoint_dirname(self.step)
        summary = ""
        if (v := self.last_val) is not None:
            summary = (f": val usage {v['usage']:.1%}, perplexity {v['perplexity']:.1f}, "
                       f"PSNR {v['psnr']:.2f} dB, SSIM {v['ssim']:.4f} on {v['num_images']} images")
        if (v := self.last_val_ema) is not None:
            summary += f"; weight EMA ({final / EMA_DIR}): PSNR {v['psnr']:.2f} dB, usage {v['usage']:.1%}"
        print(f"done: {final}{summary}", file=sys.stderr)

    # -- what the loop does on schedule ---------------------------------------------------------

    def _open_log(self) -> RunLog:
        """Rank 0: write config.yaml and open metrics.jsonl / TensorBoard (from ``self.step``)."""
        run_dir, model = self.cfg.run_dir, self.model
        run_dir.mkdir(parents=True, exist_ok=True)
        if self.step == 0:  # a fresh start: forget metrics/events of an attempt that never checkpointed
            for old in RunLayout(run_dir).events():
                old.unlink()
            RunLayout(run_dir).metrics.unlink(missing_ok=True)
        write_atomic(RunLayout(run_dir).config, self.cfg.to_yaml())
        t = self.t
        print(f"run {run_dir}: {sum(p.numel() for p in model.parameters()):,} parameters, "
              f"{self.cfg.model.quantizer} K={model.codebook_size} D={model.code_dim}, "
              f"data {self.data.description}, device {self.device}, {self.d.world} process(es), "
              f"batch {t.batch_size}", file=sys.stderr)
        return RunLog(run_dir, self.step)

    def _stop_if_diverged(self, window: Window, out: StepOutput) -> None:
        # A NaN anywhere in the window propagates into the window's sum.
        if distributed.all_true(window.finite(), self.d, self.device):
            return
        last = ckpt_io.latest_resumable(self.cfg.run_dir)
        where = f"{last}" if last else "none was written yet"
        raise TrainingDiverged(
            f"the loss became {float(out.loss)} at step {self.step} (or within the last "
            f"{window.n} steps); training stopped, last good checkpoint: {where}; "
            f"lower train.lr (now {self.t.lr:g}) or check the data")

    def _log_train(self, window: Window, log: RunLog | None, bar) -> None:
        distributed.sum_over_ranks(window.counts, self.d)  # usage over the whole global batch
        seconds = time.perf_counter() - window.t0
        self.elapsed += seconds
        row = {"step": self.step, "split": "train", "epoch": (self.step - 1) // self.data.batches_per_epoch,
               **window.summary(), "lr": self.optimizer.param_groups[0]["lr"],
               "images_per_s": window.images / max(seconds, 1e-9), "time": time.time(),
               "elapsed": self.elapsed}
        if log is not None:
            log.write(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", usage=f"{row['usage']:.1%}",
                            ppl=f"{row['perplexity']:.0f}", refresh=False)
        window.reset()

    def _validate(self, log: RunLog) -> dict:
        """Rank 0: metrics on the fixed validation subset, and the reconstruction grid."""
        from vqexplore.metrics import evaluate

        model, grid = self.model, self.data.grid_images
        metrics = evaluate(model, self.data.val_images.split(self.cfg.eval.batch_size), device=self.device)
        if self.ema is not None:
            ema = evaluate(self.ema.model, self.data.val_images.split(self.cfg.eval.batch_size), device=self.device)
            self.last_val_ema = {"step": self.step, "split": "val_ema", **ema, "time": time.time()}
            log.write(self.last_val_ema)
        if grid.shape[0]:
            with torch.no_grad(), eval_mode(model):
                recon = model(grid).reconstruction
            log.grid(self.step, grid, recon)
        row = {"step": self.step, "split": "val", **metrics, "time": time.time()}
        log.write(row)
        return row

    def _save(self) -> Path:
        step, per_epoch = self.step, self.data.batches_per_epoch
        state = {"epoch": step // per_epoch, "batch_in_epoch": step % per_epoch,
                 "batches_per_epoch": per_epoch, "elapsed": self.elapsed, "command": self.command,
                 "data": self.data.description, "world_size": self.d.world,
                 "config": self.cfg.to_dict()}  # what --resume checks against (config.yaml may be gone)
        run_facts = facts(name=self.cfg.name, data=self.data.description, step=step, command=self.command)
        return ckpt_io.save_checkpoint(self.cfg.run_dir, step, self.model, self.optimizer, state,
                                       run_facts=run_facts, keep_last=self.t.keep_last,
                                       ema_model=self.ema.model if self.ema else None,
                                       disc=self.stage.disc_module if self.stage else None,
                                       disc_optimizer=self.stage.disc_optimizer if self.stage else None)
