"""Torch dataset over slices decoded once into memory (no PNG decode per step)."""
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

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.images[self.order[i]], self.masks[self.order[i]]
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
        y = torch.from_numpy(np.ascontiguousarray(mask[None])).float()
        return x, y
