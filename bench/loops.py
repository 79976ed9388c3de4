"""The timed pieces of the benchmark: our training loop, the naive one, and their parts.

Every rate is images/s over `steps` batches timed after `warmup` batches, measured by
`TimedLoader`, which starts the clock when the first timed batch is asked for: by then the
warm-up steps have finished (each ends in `loss.item()`, which waits for the device), and the
loader's workers, if any, are running.
"""
from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medseg.augment import build_augmentation
from medseg.datasets import ReaderConfig
from medseg.datasets.registry import format_for, planned_size
from medseg.distributed import DistInfo
from medseg.hardware import pick_workers
from medseg.inference import predict_probs
from medseg.losses import LossParams, build_loss
from medseg.params import AugmentParams, ConvertParams, TrainParams
from medseg.conversion import convert_all
from medseg.torchdata import SliceDataset
from medseg.model_card import Header
from medseg.training import Recipe, build_run, make_loader, train_epoch

NAIVE_WORKERS = 4
# dense bf16 tensor-core peaks (FLOP/s, no sparsity); the first name found in the device name wins
BF16_PEAK = (("H200 NVL", 835e12), ("H200", 989e12), ("H100 NVL", 835e12), ("H100 PCIe", 756e12),
             ("H100", 989e12), ("A100", 312e12))


@dataclass
class Setting:
    """One workload: models (name -> params), train arrays, the same slices as PNGs, test images."""

    name: str
    models: dict[str, dict[str, Any]]
    images: np.ndarray  # (N, H, W, C) uint8
    masks: np.ndarray  # (N, H, W) uint8 {0, 1}
    ids: list[str]  # slice ids of `images` in `png_dir`
    png_dir: Path  # images/<id>.png and masks/<id>.png, as in data/slices
    test_images: np.ndarray | None
    batch: int


def prefetch_depth(batches: Iterable) -> int:
    """Batches a DataLoader's workers hold ready ahead of the consumer (0 without workers)."""
    if isinstance(batches, DataLoader) and batches.num_workers > 0:
        return batches.num_workers * (batches.prefetch_factor or 2)
    return 0


class TimedLoader:
    """A batch iterable (for `train_epoch` or a plain loop) that times `n_batches - warmup` batches: after the
    first `warmup`, and after the batches a DataLoader's workers had ready by then (prefetched during the
    warm-up, they would come at no cost and overstate a loader-bound rate), which it expects on top."""

    def __init__(self, batches: Iterable, n_batches: int, warmup: int) -> None:
        depth = prefetch_depth(batches)
        self.batches, self.n_batches, self.warmup = batches, n_batches + depth, warmup + depth
        self.started = self.stopped = 0.0

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self):
        it = iter(self.batches)  # worker start-up (if any) happens here, before the clock
        for i in range(self.n_batches):
            if i == self.warmup:
                synchronize()  # the warm-up steps have finished on the device, not only been queued
                self.started = time.perf_counter()
            yield next(it)

    def images_per_s(self, batch: int) -> float:
        """Rate of the timed batches; call once the consumer has finished its last step."""
        synchronize()
        return (self.n_batches - self.warmup) * batch / (time.perf_counter() - self.started)


def synchronize() -> None:
    """Wait for queued GPU work: the train loop no longer syncs per step, so the clock must."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def our_loader(setting: Setting, cfg: TrainParams, aug_cfg: AugmentParams, n_batches: int,
               device: torch.device) -> DataLoader:
    """The training loader of medseg.training: SliceDataset on decoded arrays, augmented, cfg workers; with
    workers, the batches they prefetch come on top of `n_batches` (TimedLoader leaves them untimed)."""
    n_batches += pick_workers(cfg.workers, device, 1) * 2  # DataLoader's default prefetch_factor
    order = np.resize(np.random.default_rng(0).permutation(len(setting.images)), n_batches * setting.batch)
    dataset = SliceDataset(setting.images, setting.masks, order, build_augmentation(aug_cfg, 1))
    loader = make_loader(dataset, replace(cfg, batch_size=setting.batch), device, DistInfo())
    loader.sampler.set_epoch(0, 0, dataset.base_seed)
    return loader


def train_ours(model: nn.Module, batches: Iterable, n_batches: int, warmup: int, batch: int,
               cfg: TrainParams, loss_cfg: LossParams, device: torch.device,
               amp: torch.dtype | None, memory_format: torch.memory_format) -> float:
    """images/s of the real `train_epoch` (amp, clipping, accumulation as configured) over `batches`,
    with cuDNN autotuning on a GPU as medseg.training enables it."""
    amp_key = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp]  # as train.amp names it
    cfg = replace(cfg, channels_last=memory_format == torch.channels_last, amp=amp_key)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    header = Header("bench", {}, first_conv.in_channels, {})  # a binary network; nothing is saved
    run = build_run(model, header, Recipe(cfg, loss_cfg, AugmentParams.load()))
    if run.device.type != device.type or run.amp_dtype != amp:
        raise ValueError(f"bench asked for {device}/{amp}, the train params give {run.device}/{run.amp_dtype}")
    torch.backends.cudnn.benchmark = device.type == "cuda"
    timed = TimedLoader(batches, n_batches, warmup)
    train_epoch(run, timed)
    return timed.images_per_s(batch)


def data_path(loader: DataLoader, n_batches: int, warmup: int, batch: int) -> float:
    """images/s of our loader alone (augmentation and collation, no model)."""
    timed = TimedLoader(loader, n_batches, warmup)
    for _ in timed:
        pass
    return timed.images_per_s(batch)


class PngDataset(Dataset):
    """As the seed scripts do it: read and decode both PNGs with cv2 on every item."""

    def __init__(self, folder: Path, ids: list[str], channels: int, transform: Callable | None) -> None:
        self.folder, self.ids, self.channels, self.transform = folder, ids, channels, transform

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        name = f"{self.ids[i]}.png"
        if self.channels == 1:
            image = cv2.imread(str(self.folder / "images" / name), cv2.IMREAD_GRAYSCALE)[..., None]
        else:
            image = cv2.cvtColor(cv2.imread(str(self.folder / "images" / name), cv2.IMREAD_COLOR),
                                 cv2.COLOR_BGR2RGB)
        mask = (cv2.imread(str(self.folder / "masks" / name), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        x = torch.from_numpy(image.transpose(2, 0, 1).copy()).float() / 255.0
        return x, torch.from_numpy(mask[None].copy()).float()


def train_naive(model: nn.Module, setting: Setting, n_batches: int, warmup: int, cfg: TrainParams,
                loss_cfg: LossParams, aug_cfg: AugmentParams, device: torch.device) -> float:
    """images/s of the seed-style loop: PNG decode per item, 4 workers, fp32, NCHW, AdamW, same loss."""
    torch.backends.cudnn.benchmark = False  # the seeds' default
    ids = list(np.resize(np.array(setting.ids), (n_batches + NAIVE_WORKERS * 2) * setting.batch))  # + the prefetched
    dataset = PngDataset(setting.png_dir, ids, setting.images.shape[3], build_augmentation(aug_cfg, 1))
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # more workers than cores
    loader = DataLoader(dataset, batch_size=setting.batch, shuffle=True, num_workers=NAIVE_WORKERS)
    model = model.to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    criterion = build_loss(loss_cfg).to(device)
    timed = TimedLoader(loader, n_batches, warmup)
    total = 0.0
    for x, y in timed:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return timed.images_per_s(setting.batch)


def inference(model: nn.Module, images: np.ndarray, device: torch.device, batch: int,
              amp: torch.dtype | None, memory_format: torch.memory_format) -> float:
    """images/s of predict_probs over `images`, after one warm-up batch."""
    model = model.to(device=device, memory_format=memory_format)
    predict_probs(model, images[:batch], device, batch, amp)
    synchronize()
    started = time.perf_counter()
    predict_probs(model, images, device, batch, amp)
    synchronize()
    return len(images) / (time.perf_counter() - started)


def convert_rate(raw: Path, convert: ConvertParams) -> float:
    """slices/s of convert_all (2 workers) on the phantom raw data into a temp folder, at its planned size."""
    fmt = format_for("phantom")
    cases = fmt.list_cases(raw)
    reader = ReaderConfig(planned_size("phantom", convert), convert.window_level, convert.window_width)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        manifest, _ = convert_all(fmt.__name__, cases, reader, replace(convert, workers=2), raw, Path(tmp))
        return len(manifest) / (time.perf_counter() - started)


def write_pngs(images: np.ndarray, masks: np.ndarray, folder: Path) -> list[str]:
    """The arrays as a slice store (images/, masks/ 0/255 PNGs); returns the ids."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    ids = [f"s{i:05d}" for i in range(len(images))]
    for sid, image, mask in zip(ids, images, masks):
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.shape[2] == 3 else image[..., 0]
        cv2.imwrite(str(folder / "images" / f"{sid}.png"), image)
        cv2.imwrite(str(folder / "masks" / f"{sid}.png"), mask * 255)
    return ids


def matmul_ceiling(device: torch.device, amp: torch.dtype | None, seconds: float = 1.0, n: int = 2048) -> float:
    """FLOP/s of square n x n matrix products in `amp` (fp32 without): about the most this machine's
    convolutions can reach, the ceiling a CPU row's share is measured against (a card needs n = 8192
    to leave launch overhead behind)."""
    a, b = (torch.randn(n, n, device=device, dtype=amp or torch.float32) for _ in range(2))
    a @ b  # warm-up (thread pool, kernel choice)
    synchronize()
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or count < 2:
        a @ b
        count += 1
        if device.type == "cuda":
            synchronize()
    return 2 * n**3 * count / elapsed


def bf16_peak(device_name: str) -> float | None:
    return next((peak for key, peak in BF16_PEAK if key in device_name), None)
