"""One training loop for every model: schedule, AMP, accumulation, clipping, early stopping on
val Dice, best/last checkpoints, exact resume from last.pt, and DDP when launched by torchrun."""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dvclive import Live
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from medseg import paths
from medseg.augment import build_augmentation, check_fill_channel
from medseg.model_card import Compute, Header, Threshold, finalise_best, load_checkpoint, write_best, write_last
from medseg.classes import Classes
from medseg.distributed import (DistInfo, barrier, broadcast_from_main, current, gradient_sync,
                                local_device, mean_over_ranks, wrap)
from medseg.device_data import DeviceFeed, uses_device_path
from medseg.ema import EMA
from medseg.hardware import amp_name, device_name, peak_memory_mb, pick_amp_dtype, pick_device, pick_workers
from medseg.inference import autocast, batch_logits, predict_class_probs, predict_probs
from medseg.live_images import grid_slices, prediction_grid
from medseg.losses import LossParams, build_loss
from medseg.metrics import best_threshold
from medseg.resume import RunState, finished_run, resume_from, rewind_live
from medseg.params import AugmentParams, TrainParams
from medseg.torchdata import EpochOrder, SliceDataset, model_batch_of

log = logging.getLogger("medseg.train")


@dataclass
class TrainData:
    """Decoded arrays: train images/masks with per-slice repeats, and the val set."""

    train_images: np.ndarray
    train_masks: np.ndarray
    repeats: np.ndarray
    val_images: np.ndarray
    val_masks: np.ndarray

    def fingerprint(self, config: dict[str, Any]) -> str:
        """Hash of the config and every array, so a resume never mixes two different runs."""
        h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
        for array in (self.train_images, self.train_masks, self.repeats, self.val_images, self.val_masks):
            h.update(np.ascontiguousarray(array).data)
        return h.hexdigest()


POLY_EXPONENT = 0.9  # nnU-Net's learning-rate decay


def lr_factor(epoch: int, cfg: TrainParams) -> float:
    """Multiplier of train.lr at `epoch`: linear warmup, then cosine, or nnU-Net's polynomial
    (1 - progress)^0.9, down to train.min_lr. Hand-written under one LambdaLR rather than torch's
    SequentialLR(LinearLR, CosineAnnealingLR | PolynomialLR): PolynomialLR has no floor for min_lr."""
    if cfg.scheduler == "none":
        return 1.0
    warm = cfg.warmup_epochs
    if epoch < warm:
        return (epoch + 1) / (warm + 1)
    progress = (epoch - warm) / max(cfg.epochs - warm, 1)
    floor = cfg.min_lr / cfg.lr
    if cfg.scheduler == "poly":
        return floor + (1 - floor) * (1 - progress) ** POLY_EXPONENT
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, cfg: TrainParams, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer of train.optimizer; Adam(W) fused into one kernel per step on CUDA (the CPU keeps
    the default implementation, whose numbers the committed results were made with)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=True)
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    fused = {"fused": True} if device.type == "cuda" else {}
    return kind(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Recipe:
    """What a training run is configured with: the train, loss and augment params sections."""

    train: TrainParams
    loss: LossParams
    augment: AugmentParams


@dataclass(frozen=True)
class RunDirs:
    """Where a run writes: its checkpoints (best.pt, last.pt) and its dvclive log."""

    checkpoints: Path
    live: Path


@dataclass
class Run:
    """One training run's objects: the network (`model`, wrapped for DDP once resumed; `core`, the plain
    module that is scored and saved), optimizer, schedule, loss, device and dtype, and its state."""

    cfg: TrainParams
    header: Header
    core: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: EMA | None
    criterion: nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None
    info: DistInfo
    classes: Classes
    state: RunState = field(default_factory=RunState)
    model: nn.Module | None = None
    val: tuple[torch.Tensor, torch.Tensor] | None = None  # val images and masks held on the device (device path)

    def __post_init__(self) -> None:
        self.model = self.core if self.model is None else self.model

    @property
    def memory_format(self) -> torch.memory_format:
        return memory_format(self.cfg)

    @property
    def scored(self) -> nn.Module:
        """What is validated and kept: the EMA average when there is one, else the network itself."""
        return self.core if self.ema is None else self.ema.module


def memory_format(cfg: TrainParams) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last is True else torch.preserve_format


SMALL_BATCH = 16  # below this many images per process, BatchNorm's batch statistics are noisy: sync them under DDP


def for_device(cfg: TrainParams, device: torch.device, world_size: int) -> TrainParams:
    """train's `auto` keys that depend on the machine, resolved for `device` and the DDP world size."""
    cuda = device.type == "cuda"

    def pick(value: Any, on_cuda: Any, on_cpu: Any) -> Any:
        return (on_cuda if cuda else on_cpu) if value == "auto" else value

    return replace(cfg, workers=pick_workers(cfg.workers, device, world_size),
                   channels_last=pick(cfg.channels_last, True, False),
                   sync_bn=pick(cfg.sync_bn, world_size > 1 and cfg.batch_size < SMALL_BATCH, False),
                   checkpoint_every=pick(cfg.checkpoint_every, 5, 1), image_every=pick(cfg.image_every, 5, 1))


def compiled(model: nn.Module, mode: str) -> nn.Module:
    """`model` through torch.compile in `mode` (train.compile), or itself when off. The compiled module
    shares the parameters: checkpoints keep saving the plain module."""
    return model if mode == "off" else torch.compile(model, mode=mode)


def build_run(model: nn.Module, header: Header, recipe: Recipe) -> Run:
    """Set up a run: the device (this rank's under torchrun), the autocast dtype, the network on it, the
    optimizer with its warm-up and decay, the loss for the header's classes, the scaler and EMA."""
    info = current()
    device = local_device(pick_device(recipe.train.device), info)
    cfg = for_device(recipe.train, device, info.world_size)
    amp_dtype = pick_amp_dtype(cfg.amp, device)
    if device.type == "cuda":  # fixed input sizes: let cuDNN pick its fastest kernels (GPU runs are not bit-exact)
        torch.backends.cudnn.benchmark = True
    if cfg.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the same parameters and state_dict keys
    model = model.to(device=device, memory_format=memory_format(cfg))
    optimizer = make_optimizer(model, cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, cfg))
    classes = header.classes
    criterion = build_loss(recipe.loss, classes).to(device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    return Run(cfg, header, model, optimizer, scheduler, scaler, ema, criterion, device, amp_dtype, info, classes)


RESUME_FREE = ("checkpoint_every", "image_every")  # how often the run writes, not what it trains: a resume may change them


def run_fingerprint(run: Run, data: TrainData, recipe: Recipe) -> str:
    """What makes two runs the same run (a resume never mixes two): the header, the sections, the
    resolved dtype (a last.pt made under bf16 must not resume under fp16 and its GradScaler), the
    world size under DDP (another effective batch) and every array."""
    train = {k: v for k, v in run.cfg.as_dict().items() if k not in RESUME_FREE}
    config = {"model": run.header.fields(), "train": train, "loss": recipe.loss.as_dict(),
              "augment": recipe.augment.as_dict(), "amp": amp_name(run.amp_dtype)}
    if run.info.world_size > 1:
        config["world_size"] = run.info.world_size
    return data.fingerprint(config)


def train(model: nn.Module, header: Header, data: TrainData, recipe: Recipe, dirs: RunDirs,
          keep_finished: bool = False) -> RunState:
    """Train `model`; `header` (model name, params, channels) goes into every checkpoint.

    Under torchrun every rank runs this loop on its share of each epoch; rank 0 alone writes the
    checkpoints and the log, and every rank takes the same early-stopping decision. With
    `keep_finished` a run of the same fingerprint that already finished is kept, not repeated
    (the folds before the one a killed k-fold run was in).
    """
    name, run = header.model, build_run(model, header, recipe)
    fingerprint = run_fingerprint(run, data, recipe)
    last, best = dirs.checkpoints / paths.LAST, dirs.checkpoints / paths.BEST
    if keep_finished and (done := finished_run(last, best, fingerprint)) is not None:
        log.info("%s: %s already holds this run, finished; kept", name, dirs.checkpoints)
        return done
    resumed = resume_from(last, best, fingerprint, amp_name(run.amp_dtype), run)
    resume, run.state = resumed is not None, resumed or RunState()
    if resume:
        log.info("resuming %s from %s after epoch %d", name, last, run.state.epoch)
    # best.pt persists across `dvc repro`: a fresh run replaces (or removes) it after its first epoch,
    # before its first last.pt, so a run that fails at start-up still leaves the user the previous model
    stale_best = not resume and run.info.is_main
    barrier()  # every rank has read last.pt before rank 0 may overwrite it
    log.info("%s on %s, %s, %d train draws/epoch, %d val slices, %d process(es)", name, run.device,
             amp_name(run.amp_dtype), int(data.repeats.sum()), len(data.val_images), run.info.world_size)
    run.model = wrap(compiled(run.core, run.cfg.compile), run.device, run.info)
    loader, shown = train_loader(run, data, recipe.augment), grid_slices(data.val_masks)
    if resume and run.info.is_main:
        rewind_live(dirs.live, run.state.epoch)
    with contextlib.ExitStack() as opened, BackgroundWriter(run.device.type == "cuda") as writer:
        live = None  # opened at the first epoch's log: a fresh Live wipes the log folder, so the previous log stays till then
        while run.state.epoch < run.cfg.epochs and not run.state.finished:
            epoch = one_epoch(run, data, loader, shown)
            stale_best = select_and_stop(run, epoch, best, stale_best)
            if not run.info.is_main:
                continue
            if live is None:
                live = opened.enter_context(Live(dir=str(dirs.live), dvcyaml=None, save_dvc_exp=False,
                                                 resume=resume, report=None))
                if resume:
                    live.step = run.state.epoch - 1  # epoch e is logged at step e-1; the checkpoint, not dvclive, is the truth
            log_epoch(run, live, epoch, data, shown)
            save_last(run, last, fingerprint, writer)
            log.info("epoch %d/%d train_loss %.4f val_loss %.4f val_dice %.4f", run.state.epoch, run.cfg.epochs,
                     epoch.train_loss, epoch.val_loss, epoch.val_dice)
            live.next_step()
    if run.info.is_main and run.state.finished and best.exists():
        _finalise_best(best, data, run, int(data.repeats.sum()))
    barrier()  # no rank returns (and reads best.pt) before rank 0 has written it
    return run.state


@dataclass(frozen=True)
class Epoch:
    """What one epoch measured: train loss and gradient norm (means over ranks), the learning rate it
    ran at, val loss and Dice (rank 0's, broadcast) and rank 0's val probabilities (None elsewhere)."""

    train_loss: float
    grad_norm: float
    lr: float
    val_loss: float
    val_dice: float
    shown_probs: np.ndarray | None  # the grid slices' val probabilities, on rank 0


class BackgroundWriter(contextlib.AbstractContextManager):
    """File writes on one background thread, one at a time: the loop hands over what to write and goes
    on; the writer keeps a host copy (the loop goes on changing the tensors). The next write, and
    leaving the context, wait for the previous one (whose error is raised then); each file is written
    through a temp name, so a kill leaves the last whole one.
    With `background` False (a CPU run: the write would share the cores the step uses, there is
    nothing to overlap) each write happens at once, as the loop hands it over."""

    def __init__(self, background: bool = True) -> None:
        self.pool, self.pending = ThreadPoolExecutor(max_workers=1) if background else None, None
        self.pending: Future | None

    def submit(self, write: Callable[..., None], *args: Any) -> None:
        self.wait()
        if self.pool is None:
            write(*args)
            return
        self.pending = self.pool.submit(write, *host_copy(args))

    def check(self) -> None:
        """Raise the error of a write that already failed (the loop stops at once, not at the next write)."""
        if self.pending is not None and self.pending.done():
            self.wait()

    def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def __exit__(self, *exc: object) -> None:
        try:
            self.wait()
        finally:
            if self.pool is not None:
                self.pool.shutdown()


def host_copy(state: Any) -> Any:
    """A copy of a state (nested dicts and lists of tensors and values) with every tensor on the host,
    which the loop may go on changing while it is written."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: host_copy(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(host_copy(v) for v in state)
    return copy.deepcopy(state)


def train_loader(run: Run, data: TrainData, augment: AugmentParams) -> DataLoader | DeviceFeed:
    """One shuffled, augmented source of batches for the whole run: a DataLoader (workers started once)
    or, on the device path, the slices held on the device (the val slices too, in `run.val`); each
    epoch's order and draws are set by set_epoch_order."""
    check_fill_channel(augment, data.train_images.shape[3])
    if uses_device_path(run.cfg, augment, run.device):
        run.val = (torch.from_numpy(data.val_images).to(run.device), torch.from_numpy(data.val_masks).to(run.device))
        return DeviceFeed(data, augment, run.cfg.batch_size, run.device, run.info)
    order = np.repeat(np.arange(len(data.train_images)), data.repeats)
    dataset = SliceDataset(data.train_images, data.train_masks, order, build_augmentation(augment, run.cfg.seed))
    return make_loader(dataset, run.cfg, run.device, run.info)


def set_epoch_order(run: Run, loader: DataLoader | DeviceFeed) -> None:
    """Seed the epoch: the global generators, the shuffle and the augmentation draws, from the run seed and
    the epoch; each rank its own draws (rank 0, and a single process, keeps the epoch seed)."""
    epoch_seed = run.cfg.seed * 100_003 + run.state.epoch
    seed_everything(epoch_seed)
    feed = loader.sampler if isinstance(loader, DataLoader) else loader
    feed.set_epoch(run.state.epoch, epoch_seed, epoch_seed + 1_000_003 * run.info.rank)


def one_epoch(run: Run, data: TrainData, loader: DataLoader | DeviceFeed, shown: np.ndarray) -> Epoch:
    """Train over `loader`, step the schedule, validate (rank 0 scores; the others take its numbers, so
    all agree on the best epoch and on stopping) and count the epoch."""
    set_epoch_order(run, loader)
    started = time.perf_counter()
    train_loss, grad_norm = train_epoch(run, loader)
    run.state.train_seconds += time.perf_counter() - started
    train_loss, grad_norm = mean_over_ranks(train_loss, run.device), mean_over_ranks(grad_norm, run.device)
    lr = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    val_loss, val_dice, shown_probs = _validate(run, data, shown) if run.info.is_main else (0.0, 0.0, None)
    val_loss, val_dice = broadcast_from_main((val_loss, val_dice), run.device)
    run.state.epoch += 1
    return Epoch(train_loss, grad_norm, lr, val_loss, val_dice, shown_probs)


def select_and_stop(run: Run, epoch: Epoch, best: Path, stale_best: bool) -> bool:
    """Keep the epoch in `best` when its val Dice is the best so far, or with `train.select: final` the
    schedule's last epoch only (rank 0 writes); count the epochs without a better one for early
    stopping (not with final), and drop the previous run's best.pt unless this epoch replaced it.
    Returns whether a stale best.pt may still be there."""
    state = run.state
    final = run.cfg.select == "final"  # anything else (an unresolved auto too) keeps the best val epoch
    if state.epoch >= run.cfg.epochs if final else epoch.val_dice > state.best_dice:
        state.best_dice, state.best_epoch, state.bad_epochs = epoch.val_dice, state.epoch, 0
        if run.info.is_main:
            write_best(best, run.header, run.scored.state_dict(), state.epoch, epoch.val_dice, run.cfg.threshold)
    else:
        state.bad_epochs += 1
    if stale_best:  # the previous run's best.pt, unless this epoch just replaced it
        if state.best_epoch != state.epoch:
            best.unlink(missing_ok=True)
        stale_best = False
    if not final and run.cfg.patience and state.bad_epochs >= run.cfg.patience:
        state.finished = True
        log.info("early stop after epoch %d (best val Dice %.4f at epoch %d)", state.epoch, state.best_dice,
                 state.best_epoch)
    state.finished |= state.epoch >= run.cfg.epochs
    return stale_best


def due(every: int, epoch: int, last_epoch: bool) -> bool:
    """Whether an every-N-epochs write falls on `epoch` (counted from 1); the run's last epoch always."""
    return last_epoch or epoch % every == 0


def log_epoch(run: Run, live: Live, epoch: Epoch, data: TrainData, shown: np.ndarray) -> None:
    """The epoch's curves, and every train.image_every epochs its image grid of the val slices `shown`, into dvclive."""
    for key in ("train_loss", "val_loss", "val_dice", "lr", "grad_norm"):
        live.log_metric(key, getattr(epoch, key))
    if due(run.cfg.image_every, run.state.epoch, run.state.finished):
        live.log_image(f"val_predictions/{live.step}.png", prediction_grid(
            data.val_images[shown], data.val_masks[shown], epoch.shown_probs, np.arange(len(shown)), run.cfg.threshold))
    live.log_metric("best_val_dice", run.state.best_dice, plot=False)


def save_last(run: Run, last: Path, fingerprint: str, writer: BackgroundWriter) -> None:
    """last.pt: everything an exact resume needs (weights, optimizer, schedule, scaler, EMA, run state),
    every train.checkpoint_every epochs, at the last one, and whenever best.pt was just written (a
    resume never starts behind the best.pt on disk); through `writer` (in the background on CUDA)."""
    writer.check()
    state = run.state
    if not (due(run.cfg.checkpoint_every, state.epoch, state.finished) or state.best_epoch == state.epoch):
        return
    resume = {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
              "scaler": run.scaler.state_dict(), "fingerprint": fingerprint,
              "ema": run.ema.state_dict() if run.ema is not None else {}, "amp": amp_name(run.amp_dtype),
              "train_state": vars(state).copy()}
    writer.submit(write_last, last, run.header, run.core.state_dict(), resume)


def make_loader(dataset: SliceDataset, cfg: TrainParams, device: torch.device, info: DistInfo) -> DataLoader:
    """The run's shuffled loader (EpochOrder: under DDP this rank's share, equal on every rank), its
    workers kept across epochs; set_epoch_order (or the sampler's set_epoch) seeds each epoch."""
    workers = pick_workers(cfg.workers, device, info.world_size)
    sampler = EpochOrder(len(dataset), cfg.seed, info.world_size, info.rank)
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=len(sampler) > cfg.batch_size,
                      num_workers=workers, generator=torch.Generator().manual_seed(cfg.seed),
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0)


def _finalise_best(best: Path, data: TrainData, run: Run, draws_per_epoch: int) -> None:
    """Put into best.pt the val best-F1 threshold (one per region; none for exclusive classes,
    decided by argmax), so the checkpoint alone is enough to predict, and what training cost
    (device, dtype, time, epochs, throughput, peak memory)."""
    from medseg.model_loader import network_from_checkpoint

    cfg, device, amp_dtype, state, classes = run.cfg, run.device, run.amp_dtype, run.state, run.classes
    model = network_from_checkpoint(load_checkpoint(best), best).to(device)
    if classes.multi:
        probs = predict_class_probs(model, data.val_images, device, classes.mode == "exclusive", cfg.batch_size,
                                    amp_dtype)
        threshold = Threshold(cfg.threshold, "argmax over background and the classes" if classes.mode == "exclusive"
                              else "best pixel F1 of each region on the val split", True,
                              class_thresholds(probs, data.val_masks, classes, cfg.seed))
    else:
        probs = predict_probs(model, data.val_images, device, cfg.batch_size, amp_dtype)
        threshold = Threshold(best_threshold(probs, data.val_masks, cfg.seed), "best pixel F1 on the val split", True)
    finalise_best(best, threshold, Compute(device_name(device), amp_name(amp_dtype), str(torch.__version__),
                                           cfg.batch_size, state.epoch, state.train_seconds,
                                           draws_per_epoch * state.epoch / max(state.train_seconds, 1e-9),
                                           peak_memory_mb(device)))
    log.info("val threshold(s) %s stored in %s", threshold.per_class or threshold.value, best)


def class_thresholds(probs: np.ndarray, codes: np.ndarray, classes: Classes, seed: int) -> list[float] | None:
    """Per region, the best pixel-F1 cut-off of its channel on these codes; None for exclusive classes."""
    if classes.mode == "exclusive":
        return None
    truth = classes.masks_of(codes)
    return [best_threshold(probs[:, k], truth[:, k], seed) for k in range(len(classes.names))]


def train_epoch(run: Run, loader: Iterable) -> tuple[float, float]:
    """One pass over `loader`: (mean loss per image, mean gradient norm per optimizer step, before
    clipping). Both are summed on the device and read once, so no step waits for the host; on rank 0
    in a terminal, a progress bar over the batches."""
    model, criterion, optimizer, scaler, cfg = run.model, run.criterion, run.optimizer, run.scaler, run.cfg
    device, amp_dtype, memory_format, ema = run.device, run.amp_dtype, run.memory_format, run.ema
    progress = run.info.is_main
    model.train()
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    norms, steps_taken = torch.zeros((), dtype=torch.float64, device=device), torch.zeros((), device=device)
    optimizer.zero_grad(set_to_none=True)
    batches = tqdm(loader, desc="batches", unit="batch", leave=False, disable=not (progress and sys.stderr.isatty()))
    for step, (x, y) in enumerate(batches, start=1):
        x, y = model_batch_of(x, y, device, memory_format)
        updates = step % cfg.grad_accum == 0 or step == len(loader)  # this batch ends an accumulation: step
        with gradient_sync(model, updates):
            with autocast(device, amp_dtype):
                logits = model(x)
            loss = criterion(logits.float(), y)
            scaler.scale(loss / cfg.grad_accum).backward()
        if updates:
            scaler.unscale_(optimizer)  # the norm (and clipping) of the true gradients, not the fp16-scaled ones
            norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            finite = torch.isfinite(norm)  # an fp16 overflow step (skipped by the scaler) is left out
            norms += torch.where(finite, norm, 0).double()
            steps_taken += finite
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update_parameters(run.core)
        total += loss.detach().double() * len(x)
        count += len(x)
    return float(total) / max(count, 1), float(norms) / max(float(steps_taken), 1.0)


@torch.no_grad()
def _validate(run: Run, data: TrainData, shown: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Val loss (mean over batches, weighted by their size), global val Dice (with several classes,
    its mean over the classes) and the probabilities of the grid slices `shown`, of the run's scored
    network. The loss and the binary Dice's pixel counts are summed on the device and read once."""
    model, criterion, cfg, device, amp_dtype, classes = (run.scored, run.criterion, run.cfg, run.device, run.amp_dtype,
                                                         run.classes)
    total = torch.zeros((), dtype=torch.float64, device=device)
    counts = torch.zeros(2, dtype=torch.int64, device=device)  # binary: intersection, pred + truth pixels
    hits = np.zeros((len(classes.names), 2), np.int64)  # per class: intersection, pred + truth pixels
    picked, grid = torch.from_numpy(np.isin(np.arange(len(data.val_images)), shown)).to(device), []
    images, masks = run.val or (data.val_images, data.val_masks)
    for rows, logits in batch_logits(model, images, device, cfg.batch_size, amp_dtype):
        target = (masks[rows, None] if run.val else torch.from_numpy(masks[rows, None])).to(device).float()
        total += criterion(logits, target).double() * len(logits)
        if not classes.multi:
            probs = torch.sigmoid(logits)[:, 0]
            pred, truth = probs >= cfg.threshold, target[:, 0] > 0
            counts += torch.stack([(pred & truth).sum(), pred.sum() + truth.sum()])
            grid.append(probs[picked[rows]])
            continue
        exclusive = classes.mode == "exclusive"
        channel = torch.softmax(logits, dim=1) if exclusive else torch.sigmoid(logits)
        grid.append((1 - channel[:, 0] if exclusive else channel.amax(dim=1))[picked[rows]])
        pred = classes.decide(channel.cpu().numpy(), [cfg.threshold] * len(classes.names))
        truth = classes.masks_of(data.val_masks[rows])
        hits += np.stack([(pred & truth).sum(axis=(0, 2, 3)), pred.sum(axis=(0, 2, 3)) + truth.sum(axis=(0, 2, 3))], 1)
    loss = float(total) / max(len(data.val_images), 1)
    # the grid's rows in the order of `shown` (they were gathered in slice order)
    shown_probs = torch.cat(grid).cpu().numpy()[np.argsort(np.argsort(shown))]
    if classes.multi:
        return loss, float(np.mean([1.0 if n == 0 else 2 * i / n for i, n in hits])), shown_probs
    inter, both = counts.tolist()
    return loss, 1.0 if both == 0 else 2 * inter / both, shown_probs
