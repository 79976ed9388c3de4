"""Training augmentation from the `augment` params section (albumentations 2.x); none for val/test."""
from __future__ import annotations

import albumentations as A
import cv2

from medseg.params import AugmentParams


def build_augmentation(cfg: AugmentParams, seed: int) -> A.Compose:
    """Each params value is the probability of one transform family (0 turns it off)."""
    families = [
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
