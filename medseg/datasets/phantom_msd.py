"""Synthetic chest CT volumes written in the Medical Segmentation Decathlon layout.

Hand-written: no library generates lung-lesion CT phantoms. The volumes go through the same
NIfTI converter as real MSD data, stored LPS like DICOM-derived CT so the reorientation runs.
"""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

AIR_HU, TISSUE_HU, LUNG_HU, BONE_HU, LESION_HU = -1000.0, 40.0, -850.0, 450.0, 20.0


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def phantom_volume(rng: np.random.Generator, size: int, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """One CT volume in HU and its lesion mask, both (depth, rows, cols) in display orientation."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    zz = np.arange(depth, dtype=np.float32)
    image = np.full((depth, size, size), AIR_HU, np.float32)
    lungs = np.zeros((depth, size, size), bool)
    shift = rng.normal(0, 0.02 * size, 2)
    cy, cx = size * 0.52 + shift[0], size * 0.5 + shift[1]
    body = _ellipse(yy, xx, cy, cx, size * rng.uniform(0.28, 0.34), size * rng.uniform(0.40, 0.46))
    spine = _ellipse(yy, xx, cy + size * 0.22, cx, size * 0.05, size * 0.05)
    for k in range(depth):
        extent = np.sin(np.pi * (k + 1) / (depth + 1)) ** 0.5  # lungs taper at apex and base
        image[k][body] = TISSUE_HU
        image[k][spine] = BONE_HU
        for side in (-1, 1):
            lung = _ellipse(yy, xx, cy - size * 0.02, cx + side * size * 0.2,
                            size * 0.2 * extent + 1e-3, size * 0.13 * extent + 1e-3)
            lungs[k] |= lung & body
        image[k][lungs[k]] = LUNG_HU + rng.normal(0, 20)
        # vessels: small bright dots inside the lungs that are not lesions
        for _ in range(rng.integers(3, 9)):
            inside = np.argwhere(lungs[k])
            if len(inside) == 0:
                break
            vy, vx = inside[rng.integers(len(inside))]
            image[k][_ellipse(yy, xx, vy, vx, *rng.uniform(0.6, 1.3, 2))] = rng.uniform(-100, 60)
    mask = np.zeros_like(lungs)
    n_lesions = 0 if rng.random() < 0.2 else int(rng.integers(1, 3))
    for _ in range(n_lesions):
        inside = np.argwhere(lungs[depth // 5: depth - depth // 5])
        if len(inside) == 0:
            continue
        lz, ly, lx = inside[rng.integers(len(inside))]
        lz += depth // 5
        r = rng.uniform(0.04, 0.09) * size
        rz = rng.uniform(1.5, 3.0)
        ball = (((zz[:, None, None] - lz) / rz) ** 2 + ((yy - ly) / r) ** 2
                + ((xx - lx) / (r * rng.uniform(0.8, 1.25))) ** 2) <= 1.0
        mask |= ball
        image[ball] = LESION_HU + rng.normal(0, 15)
    gain, offset = rng.uniform(0.9, 1.1), rng.normal(0, 30)
    image = image * gain + offset + rng.normal(0, 25, image.shape).astype(np.float32)
    return image.astype(np.float32), mask


def write(root: Path, cases: int, depth: int, size: int, seed: int) -> None:
    """Write `cases` volumes as imagesTr/labelsTr NIfTI files plus dataset.json under `root`."""
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    spacing = (0.8 * 512 / size, 0.8 * 512 / size, 2.5)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS, as DICOM-derived CT
    training = []
    for i in range(cases):
        image, mask = phantom_volume(rng, size, int(depth + rng.integers(-depth // 4, depth // 4 + 1)))
        name = f"phantom_{i:03d}.nii.gz"
        # display (z, row, col) -> stored (x, y, z) with x=col, y=row under the LPS affine
        to_disk = lambda a: np.ascontiguousarray(np.transpose(a, (2, 1, 0)))  # noqa: E731
        nib.save(nib.Nifti1Image(np.round(to_disk(image)).astype(np.int16), affine),
                 root / "imagesTr" / name)
        nib.save(nib.Nifti1Image(to_disk(mask).astype(np.uint8), affine), root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {
        "name": "PhantomLung", "description": "synthetic chest CT with small lung lesions",
        "modality": {"0": "CT"}, "labels": {"0": "background", "1": "lesion"},
        "numTraining": cases, "training": training,
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
