"""Torch dataset over slices decoded once into memory (no PNG decode per step).

Each item's augmentation is drawn from its own seed (the Compose's seed and the item's position in the
epoch), not from a random state the Compose carries: albumentations keeps that state inside the
Compose object, so forked DataLoader workers would each start from the same state and repeat each
other's draws, and the recipe would change with `train.workers`. Per-item seeds give the same batches
with 0, 2 or 4 workers."""
from __future__ import annotations

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset


class SliceDataset(Dataset):
    """Items (image C x H x W float in [0, 1], mask 1 x H x W float {0, 1}) from uint8 arrays."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, order: np.ndarray | None = None,
                 transform: A.Compose | None = None) -> None:
        self.images, self.masks = images, masks
        self.order = np.arange(len(images)) if order is None else order
        self.transform = transform
        self.base_seed = None if transform is None else transform.seed  # build_augmentation's epoch seed

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.images[self.order[i]], self.masks[self.order[i]]
        if self.transform is not None:
            self.transform.set_random_seed(item_seed(self.base_seed, i))
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
        y = torch.from_numpy(np.ascontiguousarray(mask[None])).float()
        return x, y


def item_seed(base: int | None, position: int) -> int | None:
    """The augmentation seed of the item at `position` of an epoch whose Compose was seeded `base`
    (None: unseeded, fresh entropy per item)."""
    if base is None:
        return None
    return int(np.random.SeedSequence([base, position]).generate_state(1)[0])
