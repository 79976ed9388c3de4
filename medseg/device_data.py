"""The training data path on the device (`train.data_path: device`): the train slices held once as
uint8 tensors where the network runs, each epoch's batches drawn by index and augmented there.

Written by hand because the augmentation must run as batched tensor operations under one seeded
device generator (a CUDA run would otherwise wait on CPU workers running albumentations per item);
MONAI's and torchvision's transforms draw per item from the global generator. The families and their
ranges are those of medseg.augment (albumentations), each applied to an item with its `augment`
probability: a missing channel (others replaced by augment.fill_channel), flips, an affine (scale
0.9-1.1 per axis, shift 5 %, rotation 15 degrees; bilinear for the image, nearest for the mask, zeros
outside), brightness and contrast (15 %), Gaussian noise (std 2-6 % of the range) and 1-4 dropped
holes (5-10 % of each side; the mask kept). Elastic and grid distortions have no device version: with
either on, `auto` keeps the loader.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from medseg.distributed import DistInfo
from medseg.errors import MedsegError
from medseg.params import AugmentParams, TrainParams

if TYPE_CHECKING:
    from medseg.training import TrainData

LOADER_ONLY = ("elastic", "grid_distortion")  # augment families with no device version


def uses_device_path(cfg: TrainParams, augment: AugmentParams, device: torch.device) -> bool:
    """Whether training draws its batches on the device: train.data_path, where auto means on CUDA
    unless an augment family without a device version is on. `device` asked for such a family is refused."""
    missing = [f"augment.{name}" for name in LOADER_ONLY if getattr(augment, name) > 0]
    if cfg.data_path == "device" and missing:
        raise MedsegError(f"params.yaml: train.data_path=device: {' and '.join(missing)} have no device version; "
                          "set them to 0 or train.data_path to loader")
    if cfg.data_path == "auto":
        return device.type == "cuda" and not missing
    return cfg.data_path == "device"


def uniform(generator: torch.Generator, n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


class DeviceAugment:
    """medseg.augment's families as batched operations on (B, C, H, W) float images in [0, 1] and
    (B, 1, H, W) float masks; `applied` holds, per family, which items of the last batch it changed."""

    def __init__(self, cfg: AugmentParams) -> None:
        self.cfg = cfg
        self.applied: dict[str, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        self.applied = {}
        for family in ("missing_channels", "hflip", "vflip", "affine", "brightness_contrast", "noise", "coarse_dropout"):
            p = getattr(self.cfg, family)
            if p == 0:
                continue
            chosen = torch.rand(len(x), generator=generator, device=x.device) < p
            changed_x, changed_y = getattr(self, family)(x, y, generator)
            x = torch.where(chosen[:, None, None, None], changed_x, x)
            y = torch.where(chosen[:, None, None, None], changed_y, y)
            self.applied[family] = chosen
        return x, y

    def missing_channels(self, x, y, generator):
        """A non-empty random subset of the channels other than augment.fill_channel replaced by it."""
        n, channels = x.shape[:2]
        fill = self.cfg.fill_channel
        others = torch.tensor([c for c in range(channels) if c != fill], device=x.device, dtype=torch.long)
        if len(others) == 0:
            return x, y
        code = torch.randint(1, 2 ** len(others), (n,), generator=generator, device=x.device)
        bits = (code[:, None] >> torch.arange(len(others), device=x.device)) & 1  # (n, others)
        replaced = torch.zeros((n, channels), dtype=torch.bool, device=x.device)
        replaced[:, others] = bits.bool()
        return torch.where(replaced[:, :, None, None], x[:, fill: fill + 1], x), y

    def hflip(self, x, y, generator):
        return x.flip(-1), y.flip(-1)

    def vflip(self, x, y, generator):
        return x.flip(-2), y.flip(-2)

    def affine(self, x, y, generator):
        """Each item scaled, shifted and rotated about the centre: the sampling grid is the inverse map."""
        n, device = len(x), x.device
        sx, sy = uniform(generator, n, 0.9, 1.1, device), uniform(generator, n, 0.9, 1.1, device)
        tx, ty = uniform(generator, n, -0.05, 0.05, device), uniform(generator, n, -0.05, 0.05, device)
        angle = uniform(generator, n, -15, 15, device) * math.pi / 180
        cos, sin = torch.cos(angle), torch.sin(angle)
        # forward: p' = R(angle) diag(sx, sy) p + t; the grid holds its inverse, diag(1/sx, 1/sy) R(-angle) (p' - t),
        # in coordinates that span [-1, 1] (a shift of t of the side is 2t)
        linear = torch.stack([torch.stack([cos / sx, sin / sx], 1), torch.stack([-sin / sy, cos / sy], 1)], 1)
        shift = -(linear @ torch.stack([2 * tx, 2 * ty], 1)[:, :, None])
        theta = torch.cat([linear, shift], 2)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        image = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return image, F.grid_sample(y, grid, mode="nearest", padding_mode="zeros", align_corners=False)

    def brightness_contrast(self, x, y, generator):
        n, device = len(x), x.device
        alpha = 1 + uniform(generator, n, -0.15, 0.15, device)
        beta = uniform(generator, n, -0.15, 0.15, device)
        return (x * alpha[:, None, None, None] + beta[:, None, None, None]).clamp_(0, 1), y

    def noise(self, x, y, generator):
        std = uniform(generator, len(x), 0.02, 0.06, x.device)
        noise = torch.randn(x.shape, generator=generator, device=x.device) * std[:, None, None, None]
        return (x + noise).clamp_(0, 1), y

    def coarse_dropout(self, x, y, generator):
        """1-4 holes per item (zeros in the image, the mask kept), each 5-10 % of the height and width."""
        n, _, h, w = x.shape
        keep = torch.ones((n, 1, h, w), device=x.device)
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        holes = torch.randint(1, 5, (n,), generator=generator, device=x.device)
        for k in range(4):
            hh = (uniform(generator, n, 0.05, 0.1, x.device) * h).ceil()
            ww = (uniform(generator, n, 0.05, 0.1, x.device) * w).ceil()
            top, left = torch.rand(n, generator=generator, device=x.device) * (h - hh), \
                torch.rand(n, generator=generator, device=x.device) * (w - ww)
            inside = (((rows[None] >= top.floor()[:, None]) & (rows[None] < (top.floor() + hh)[:, None]))[:, :, None]
                      & ((cols[None] >= left.floor()[:, None]) & (cols[None] < (left.floor() + ww)[:, None]))[:, None, :])
            keep[:, 0] *= 1 - (inside & (k < holes)[:, None, None]).float()
        return x * keep, y


class DeviceFeed:
    """Each epoch's training batches from the train slices of `data` held on the device: the positions (a
    slice per draw, its repeats included) shuffled by a generator seeded with the epoch seed, this rank's share
    under DDP, each batch augmented by DeviceAugment under a device generator seeded with the
    epoch's augmentation seed. Iterates (images float [0, 1], masks float) on the device."""

    def __init__(self, data: TrainData, augment: AugmentParams, batch_size: int, device: torch.device,
                 info: DistInfo = DistInfo()) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(data.train_images.transpose(0, 3, 1, 2))).to(device)
        self.masks = torch.from_numpy(np.ascontiguousarray(data.train_masks[:, None])).to(device)
        order = np.repeat(np.arange(len(data.train_images)), data.repeats)  # one position per draw
        self.order = torch.from_numpy(order.astype(np.int64)).to(device)
        self.augment, self.batch_size, self.device = DeviceAugment(augment), batch_size, device
        self.world_size, self.rank = info.world_size, info.rank
        self.per_rank = len(order) // info.world_size if info.world_size > 1 else len(order)
        self.drop_last = self.per_rank > batch_size
        self.epoch_seed, self.augment_seed = 0, 0

    def set_epoch(self, epoch: int, epoch_seed: int, augment_seed: int | None) -> None:
        self.epoch_seed, self.augment_seed = epoch_seed, epoch_seed if augment_seed is None else augment_seed

    def __len__(self) -> int:
        return self.per_rank // self.batch_size if self.drop_last else math.ceil(self.per_rank / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        shuffle = torch.Generator().manual_seed(self.epoch_seed)  # the same order on every rank, then each its share
        positions = torch.randperm(len(self.order), generator=shuffle).to(self.device)
        positions = positions[self.rank: self.per_rank * self.world_size: self.world_size]
        draws = torch.Generator(device=self.device).manual_seed(self.augment_seed)
        for b in range(len(self)):
            picked = self.order[positions[b * self.batch_size: (b + 1) * self.batch_size]]
            x = self.images[picked].float().div_(255.0)
            yield self.augment(x, self.masks[picked].float(), draws)
