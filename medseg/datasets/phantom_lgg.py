"""Synthetic brain MRI written in the Kaggle LGG layout (kaggle_3m/TCGA_*/..._N.tif + _N_mask.tif).

Hand-written: no library generates 3-channel glioma MRI phantoms. Each channel has its own
contrast (pre-contrast, FLAIR, post-contrast, in that stored order, mean brain levels about
0.35, 0.55, 0.25) so a reader that swaps channels is caught; the tumour is bright in FLAIR only,
as the real masks segment the FLAIR abnormality. Files are uncompressed TIFs like the real ones.
"""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

# brain tissue, tumour and skull levels per channel (pre-contrast, FLAIR, post-contrast), in [0, 1]
TISSUE = np.array([0.35, 0.55, 0.25], np.float32)
TUMOUR = np.array([0.28, 0.82, 0.32], np.float32)
VENTRICLE = np.array([0.12, 0.08, 0.10], np.float32)
SKULL = np.array([0.60, 0.20, 0.55], np.float32)
TUMOUR_FREE_SHARE = 0.2
DATE = "20000101"


def _blob(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, radius: float, phases: np.ndarray) -> np.ndarray:
    """An irregular disc: its radius wobbles with angle (two low harmonics), like a real lesion edge."""
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = 1.0 + 0.15 * np.sin(2 * angle + phases[0]) + 0.1 * np.sin(3 * angle + phases[1])
    return np.hypot(yy - cy, xx - cx) <= radius * wobble


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _tumour_plan(rng: np.random.Generator, size: int, depth: int) -> tuple[float, float, float, float, float] | None:
    """(centre slice, slice radius, row, col, in-plane radius) or None for a tumour-free patient."""
    if rng.random() < TUMOUR_FREE_SHARE:
        return None
    cz = rng.uniform(0.35, 0.65) * (depth - 1)
    rz = max(rng.uniform(0.12, 0.2) * depth, 0.8)  # covers a minority of slices, as in the real set
    angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.15) * size
    return cz, rz, size / 2 + dist * np.sin(angle), size / 2 + dist * np.cos(angle), rng.uniform(0.06, 0.12) * size


def patient_slices(rng: np.random.Generator, size: int, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """(depth, size, size, 3) uint8 images in stored channel order and (depth, size, size) bool masks."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.zeros((depth, size, size, 3), np.float32)
    masks = np.zeros((depth, size, size), bool)
    gain = rng.uniform(0.8, 1.2) * rng.uniform(0.93, 1.07, 3)  # per-patient scanner and per-sequence gain
    tumour = _tumour_plan(rng, size, depth)
    phases = rng.uniform(0, 2 * np.pi, 2)
    cy, cx = size * (0.5 + rng.normal(0, 0.02)), size * (0.5 + rng.normal(0, 0.02))
    for k in range(depth):
        extent = 0.35 + 0.65 * np.sin(np.pi * (k + 0.5) / depth) ** 0.5  # head narrows at both ends
        head = _ellipse(yy, xx, cy, cx, 0.40 * size * extent, 0.33 * size * extent)
        brain = _ellipse(yy, xx, cy, cx, 0.36 * size * extent, 0.29 * size * extent)
        images[k][head] = SKULL
        images[k][brain] = TISSUE
        images[k][_ellipse(yy, xx, cy, cx, 0.08 * size * extent, 0.04 * size * extent)] = VENTRICLE
        if tumour is not None and abs(k - tumour[0]) < tumour[1]:
            shrink = np.sqrt(1.0 - ((k - tumour[0]) / tumour[1]) ** 2)
            masks[k] = _blob(yy, xx, tumour[2], tumour[3], tumour[4] * shrink + 0.5, phases) & brain
            images[k][masks[k]] = TUMOUR
    texture = np.stack([cv2.GaussianBlur(rng.normal(0, 0.04, (size, size, 3)).astype(np.float32), (0, 0), 2.0)
                        for _ in range(depth)])
    images = (images + texture * (images > 0)) * gain + rng.normal(0, 0.015, images.shape)
    return np.clip(np.round(images * 255), 0, 255).astype(np.uint8), masks


def _write_tif(path: Path, array: np.ndarray) -> None:
    if array.ndim == 3:
        array = array[..., ::-1]  # cv2 writes BGR: reverse so the file's first channel is pre-contrast
    if not cv2.imwrite(str(path), np.ascontiguousarray(array), [cv2.IMWRITE_TIFF_COMPRESSION, 1]):
        raise OSError(f"{path}: cannot write TIFF")


def _write_data_csv(path: Path, patients: list[str], rng: np.random.Generator) -> None:
    """A data.csv with the real file's `Patient` key (TCGA id without the date) and two clinical columns."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Patient", "age_at_initial_pathologic", "death01"])
        for patient in patients:
            writer.writerow([patient, int(rng.integers(20, 75)), int(rng.integers(0, 2))])


def write(root: Path, cases: int, depth: int, size: int, seed: int) -> None:
    """Write `cases` patients of about `depth` slices (+-25 %) of size x size under root/kaggle_3m/."""
    rng = np.random.default_rng(seed)
    base = root / "kaggle_3m"
    base.mkdir(parents=True)
    patients = [f"TCGA_PH_{i + 1:04d}" for i in range(cases)]
    for patient in patients:
        folder = base / f"{patient}_{DATE}"
        folder.mkdir()
        n = max(1, int(depth + rng.integers(-(depth // 4), depth // 4 + 1)))
        images, masks = patient_slices(rng, size, n)
        for k in range(n):
            stem = f"{folder.name}_{k + 1}"
            _write_tif(folder / f"{stem}.tif", images[k])
            _write_tif(folder / f"{stem}_mask.tif", masks[k].astype(np.uint8) * 255)
    _write_data_csv(base / "data.csv", patients, rng)
