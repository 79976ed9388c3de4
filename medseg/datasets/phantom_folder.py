"""Synthetic 2D slices with a label map of two classes, written in the `folder` layout (images/,
masks/ label maps, groups.csv): the offline multi-class dataset (an organ, label 1, and a lesion
inside it, label 2, in part of the slices), e.g.
`-S dataset.name=phantom_folder -S 'dataset.classes={organ: [1], lesion: [2]}'`, or the regions
`{organ_and_lesion: [1, 2], lesion: [2]}` with `dataset.class_mode: regions`.

Hand-written: no library generates label-map phantoms. The organ is a mid-grey ellipse on dark
tissue, the lesion a bright irregular disc, with per-patient gain and noise, so the classes are
told apart by intensity and shape as in a CT or MR slice; a fifth of the patients hold no lesion.
"""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from medseg.datasets.phantom_lgg import _blob, _ellipse

BODY, ORGAN, LESION = 0.25, 0.5, 0.85  # intensity levels in [0, 1]
LESION_FREE_SHARE = 0.2


def patient(rng: np.random.Generator, size: int, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """(depth, size, size) uint8 grey images and label maps (0 background, 1 organ, 2 lesion)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.zeros((depth, size, size), np.float32)
    labels = np.zeros((depth, size, size), np.uint8)
    cy, cx = size * rng.uniform(0.42, 0.58, 2)
    ry, rx = size * rng.uniform(0.18, 0.26, 2)
    lesion = None if rng.random() < LESION_FREE_SHARE else (
        rng.uniform(0.3, 0.7) * depth, max(0.25 * depth, 1.0), rng.uniform(-0.4, 0.4, 2), rng.uniform(0.25, 0.45),
        rng.uniform(0, 2 * np.pi, 2))
    gain = rng.uniform(0.85, 1.15)
    for k in range(depth):
        extent = 0.5 + 0.5 * np.sin(np.pi * (k + 0.5) / depth)
        body = _ellipse(yy, xx, size / 2, size / 2, 0.46 * size, 0.44 * size)
        organ = _ellipse(yy, xx, cy, cx, ry * extent, rx * extent)
        images[k][body] = BODY
        images[k][organ] = ORGAN
        labels[k][organ] = 1
        if lesion is not None and abs(k - lesion[0]) < lesion[1]:
            (oy, ox), share, phases = lesion[2], lesion[3], lesion[4]
            spot = _blob(yy, xx, cy + oy * ry * extent, cx + ox * rx * extent, share * min(ry, rx) * extent, phases)
            spot &= organ
            images[k][spot] = LESION
            labels[k][spot] = 2
    images = images * gain + rng.normal(0, 0.03, images.shape)
    return np.clip(np.round(images * 255), 0, 255).astype(np.uint8), labels


def write(root: Path, cases: int, depth: int, size: int, seed: int) -> None:
    """Write `cases` patients of `depth` slices as images/<id>.png, masks/<id>_mask.png and groups.csv."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for case in range(cases):
        images, labels = patient(rng, size, depth)
        for k, (image, label) in enumerate(zip(images, labels)):
            name = f"p{case:03d}_{k:03d}"
            cv2.imwrite(str(root / "images" / f"{name}.png"), image)
            cv2.imwrite(str(root / "masks" / f"{name}_mask.png"), label)
            rows.append({"image": f"{name}.png", "group": f"p{case:03d}", "slice": k})
    with (root / "groups.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "group", "slice"])
        writer.writeheader()
        writer.writerows(rows)
