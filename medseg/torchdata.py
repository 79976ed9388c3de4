"""Torch dataset over slices decoded once into memory (no PNG decode per step).

Each item's augmentation is drawn from its own seed (the Compose's seed and the item's position in the
epoch), not from a random state the Compose carries: albumentations keeps that state inside the
Compose object, so forked DataLoader workers would each start from the same state and repeat each
other's draws, and the recipe would change with `train.workers`. Per-item seeds give the same batches
with 0, 2 or 4 workers."""
from __future__ import annotations

from collections.abc import Iterator

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler


class SliceDataset(Dataset):
    """Items (image C x H x W uint8, mask 1 x H x W uint8 {0, 1}) from uint8 arrays: a quarter of the
    float32 bytes through the worker queue and the pinned copy; the training step scales on the device.

    An item is asked for by its position in the epoch, or by (epoch seed, position) from EpochOrder,
    which lets one loader and its workers serve every epoch."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, order: np.ndarray | None = None,
                 transform: A.Compose | None = None) -> None:
        self.images, self.masks = images, masks
        self.order = np.arange(len(images)) if order is None else order
        self.transform = transform
        self.base_seed = None if transform is None else transform.seed  # build_augmentation's epoch seed

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, item: int | tuple[int | None, int]) -> tuple[torch.Tensor, torch.Tensor]:
        base, i = item if isinstance(item, tuple) else (self.base_seed, item)
        image, mask = self.images[self.order[i]], self.masks[self.order[i]]
        if self.transform is not None:
            self.transform.set_random_seed(item_seed(base, i))
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        y = torch.from_numpy(np.ascontiguousarray(mask[None]))
        return x, y


def model_batch_of(x: torch.Tensor, y: torch.Tensor, device: torch.device,
                   memory_format: torch.memory_format) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on the device as the network takes it: images float32 in [0, 1] (a loader's uint8 scaled
    here; the device path's are already) in `memory_format`, masks float."""
    x = x.to(device, non_blocking=True)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x
    return x.contiguous(memory_format=memory_format), y.to(device, non_blocking=True).float()


class EpochOrder(Sampler):
    """The items of each epoch, shuffled and tagged with the epoch's augmentation seed, so one loader
    (its workers kept alive) serves every epoch. The order is the one a fresh loader shuffling with a
    generator seeded by the epoch seed gave (its iterator's first draw, the workers' base seed,
    included); under DDP it is DistributedSampler's share of this rank."""

    def __init__(self, size: int, shuffle_seed: int, world_size: int = 1, rank: int = 0) -> None:
        self.size = size
        self.shared = (DistributedSampler(range(size), num_replicas=world_size, rank=rank, shuffle=True,
                                          seed=shuffle_seed) if world_size > 1 else None)
        self.epoch, self.epoch_seed, self.augment_seed = 0, 0, None

    def set_epoch(self, epoch: int, epoch_seed: int, augment_seed: int | None) -> None:
        self.epoch, self.epoch_seed, self.augment_seed = epoch, epoch_seed, augment_seed

    def __len__(self) -> int:
        return self.size if self.shared is None else len(self.shared)

    def __iter__(self) -> Iterator[tuple[int | None, int]]:
        if self.shared is not None:
            self.shared.set_epoch(self.epoch)
            positions = list(self.shared)
        else:
            generator = torch.Generator().manual_seed(self.epoch_seed)
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            positions = torch.randperm(self.size, generator=generator).tolist()
        return iter([(self.augment_seed, p) for p in positions])


def item_seed(base: int | None, position: int) -> int | None:
    """The augmentation seed of the item at `position` of an epoch whose Compose was seeded `base`
    (None: unseeded, fresh entropy per item)."""
    if base is None:
        return None
    return int(np.random.SeedSequence([base, position]).generate_state(1)[0])
