"""Synthetic dermoscopy images written in the ISIC 2018 Task 1 layout (JPEG inputs, PNG masks).

Hand-written: no library generates skin-lesion phantoms. Like the real set, every image holds
one lesion, sizes vary and are never square, and dark hair lines cross skin and lesion alike
(they are not lesion), so a model cannot segment by darkness alone.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from medseg.datasets.isic import input_dir_name, truth_dir_name

SKIN_RGB = np.array([222, 172, 150], np.float32)
LESION_RGB = np.array([125, 78, 58], np.float32)
HAIR_RGB = (40, 28, 22)
JPEG_QUALITY = 90


def _lesion_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An irregular blob near the centre: radius modulated by a few random angular harmonics."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = h * rng.uniform(0.4, 0.6), w * rng.uniform(0.4, 0.6)
    radius = min(h, w) * rng.uniform(0.15, 0.32)
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = np.ones_like(angle)
    for order in (2, 3, 5):
        wobble += rng.uniform(0.03, 0.12) * np.sin(order * angle + rng.uniform(0, 2 * np.pi))
    return np.hypot(yy - cy, (xx - cx) * rng.uniform(0.8, 1.2)) <= radius * wobble


def _skin(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Skin tone with smooth blotches and dermoscope vignetting (dark corners), float RGB 0..255."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tone = SKIN_RGB * rng.uniform(0.85, 1.1) * rng.uniform(0.96, 1.04, 3)
    blotch = cv2.GaussianBlur(rng.normal(0, 12, (h, w)).astype(np.float32), (0, 0), min(h, w) / 20)
    r2 = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2
    vignette = 1.0 - rng.uniform(0.2, 0.45) * np.clip(r2 - 0.3, 0, None)
    return (tone + blotch[..., None]) * vignette[..., None]


def _draw_hairs(rng: np.random.Generator, image: np.ndarray) -> None:
    h, w = image.shape[:2]
    for _ in range(rng.integers(0, 6)):
        start = rng.uniform(0, 1, 2) * (w, h)
        steps = np.cumsum(rng.normal(0, 0.15, 6))  # a slowly turning direction: a curved hair
        direction = rng.uniform(0, 2 * np.pi) + steps
        seg = min(h, w) / 8
        points = start + np.cumsum(np.stack([np.cos(direction), np.sin(direction)], 1) * seg, 0)
        cv2.polylines(image, [np.round(np.vstack([start, points])).astype(np.int32)], False, HAIR_RGB,
                      int(rng.integers(1, 3)), cv2.LINE_AA)


def phantom_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 image (h < w, size <= h, w <= 1.5 size) and its lesion mask."""
    h = int(rng.integers(size, int(1.25 * size) + 1))
    w = int(rng.integers(h + 1, int(1.5 * size) + 2))
    mask = _lesion_mask(rng, h, w)
    skin = _skin(rng, h, w)
    mottle = cv2.GaussianBlur(rng.normal(0, 18, (h, w)).astype(np.float32), (0, 0), 2.0)
    lesion = LESION_RGB * rng.uniform(0.6, 1.05) + mottle[..., None]
    edge = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(min(h, w) / 150, 0.5))[..., None]
    image = skin * (1 - edge) + lesion * edge  # soft lesion border; the mask keeps the hard one
    image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    image = np.ascontiguousarray(image)
    _draw_hairs(rng, image)
    return image, mask


def write(root: Path, cases: int, depth: int, size: int, seed: int) -> None:
    """Write `cases` image/mask pairs (`depth` is unused: each case is one 2D image) under `root`."""
    rng = np.random.default_rng(seed)
    images_dir, masks_dir = root / input_dir_name("Training"), root / truth_dir_name("Training")
    images_dir.mkdir(parents=True)
    masks_dir.mkdir()
    for i in range(cases):
        image, mask = phantom_image(rng, size)
        cid = f"ISIC_{i:07d}"
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(images_dir / f"{cid}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise OSError(f"{images_dir / cid}.jpg: cannot write JPEG")
        if not cv2.imwrite(str(masks_dir / f"{cid}_segmentation.png"), mask.astype(np.uint8) * 255):
            raise OSError(f"{masks_dir / cid}_segmentation.png: cannot write PNG")
