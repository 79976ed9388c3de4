"""Training augmentation from the `augment` params section (albumentations 2.x); none for val/test.

MissingChannels is written by hand: albumentations drops or shuffles channels, but has no transform
that copies one channel into others, which is how the LGG set stores a missing MR sequence."""
from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

from medseg.errors import MedsegError
from medseg.params import AugmentParams


class MissingChannels(A.ImageOnlyTransform):
    """A missing sequence as the dataset stores one: a non-empty random subset of the channels other
    than `fill` replaced by channel `fill` (each subset equally likely)."""

    def __init__(self, fill: int, p: float) -> None:
        super().__init__(p=p)
        self.fill = fill

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        others = [c for c in range(data["image"].shape[2]) if c != self.fill]
        if not others:
            return {"replaced": []}
        code = int(self.random_generator.integers(1, 2 ** len(others)))
        return {"replaced": [c for bit, c in enumerate(others) if code >> bit & 1]}

    def apply(self, img: np.ndarray, replaced: list[int] = (), **params: Any) -> np.ndarray:
        if not replaced:
            return img
        img = img.copy()
        img[..., replaced] = img[..., [self.fill]]
        return img


def check_fill_channel(cfg: AugmentParams, channels: int) -> None:
    """augment.fill_channel must name a channel of the slices when missing channels are drawn."""
    if cfg.missing_channels > 0 and cfg.fill_channel >= channels:
        raise MedsegError(f"params.yaml: augment.fill_channel={cfg.fill_channel} but the slices have {channels} "
                          "channel(s); set it below that or augment.missing_channels to 0")


def build_augmentation(cfg: AugmentParams, seed: int) -> A.Compose:
    """Each params value is the probability of one transform family (0 turns it off); a missing
    channel first, as it is a property of the data, not of the acquisition the others imitate."""
    families = [
        MissingChannels(cfg.fill_channel, p=cfg.missing_channels),
        A.HorizontalFlip(p=cfg.hflip),
        A.VerticalFlip(p=cfg.vflip),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-15, 15),
                 border_mode=cv2.BORDER_CONSTANT, p=cfg.affine),
        A.ElasticTransform(alpha=20, sigma=5, p=cfg.elastic),
        A.GridDistortion(num_steps=5, distort_limit=0.2, p=cfg.grid_distortion),
        A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=cfg.brightness_contrast),
        A.GaussNoise(std_range=(0.02, 0.06), p=cfg.noise),
        A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.1),
                        hole_width_range=(0.05, 0.1), p=cfg.coarse_dropout),
    ]
    return A.Compose([t for t in families if t.p > 0], seed=seed)
