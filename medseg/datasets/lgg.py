"""Kaggle LGG brain MRI layout (mateuszbuda/lgg-mri-segmentation): kaggle_3m/TCGA_*/ folders of
TCGA_<inst>_<id>_<date>_<N>.tif slices (pre-contrast, FLAIR, post-contrast) with _<N>_mask.tif.

Slices are ordered by the integer N (the files sort lexicographically as 1, 10, 11, ..., 2) and
each mask path is derived from its image path, so a missing file cannot shift the pairing. The
Kaggle archive ships the set twice (kaggle_3m/ and lgg-mri-segmentation/kaggle_3m/); only the
shallowest copy is read, so no slice is counted twice or lands in two splits.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from medseg.datasets import CaseRef, ReaderConfig, Slice
from medseg.image_files import find_shallowest, is_clutter, read_binary_mask, read_image, subfolders
from medseg.errors import MedsegError
from medseg.preprocess import channel_ranges, rescale_channels, unit_image

log = logging.getLogger(__name__)

CHANNELS = 3
EXPECTED = {"patients": 110, "slices": 3929}  # Buda et al. 2019, the Kaggle release
ROOT_NAME = "kaggle_3m"
MASK_SUFFIX = "_mask"
MAX_SEARCH_DEPTH = 3


def count_summary(cases: list[CaseRef]) -> dict[str, int]:
    return {"patients": len(cases), "slices": sum(len(c.extra) for c in cases)}


def find_root(raw: Path) -> Path:
    """The shallowest kaggle_3m/ folder under `raw` (raw itself included); deeper copies are ignored."""
    return find_shallowest(raw, lambda p: p.name == ROOT_NAME, MAX_SEARCH_DEPTH,
                           f"{ROOT_NAME}/ folder found (expected the Kaggle LGG layout)")


def slice_number(image: Path) -> int:
    """N of TCGA_..._N.tif: the integer after the last underscore."""
    tail = image.stem.rsplit("_", 1)[-1]
    if not tail.isdigit():
        raise MedsegError(f"{image}: file name does not end in _<slice number>.tif")
    return int(tail)


def mask_path(image: Path) -> Path:
    return image.with_name(f"{image.stem}{MASK_SUFFIX}{image.suffix}")


def _slice_images(patient: Path) -> tuple[Path, ...]:
    """The patient's slice images in numeric order, each checked to have its mask (and vice versa)."""
    files = [p for p in patient.iterdir() if p.suffix.lower() in (".tif", ".tiff") and not is_clutter(p.name)]
    masks = {p for p in files if p.stem.endswith(MASK_SUFFIX)}
    images = [p for p in files if p not in masks]
    for image in images:
        if not mask_path(image).exists():
            raise MedsegError(f"{image}: no mask file {mask_path(image).name}")
    orphans = sorted(masks - {mask_path(p) for p in images})
    if orphans:
        image_name = orphans[0].name.replace(f"{MASK_SUFFIX}.", ".")
        raise MedsegError(f"{orphans[0]}: mask without image file {image_name}")
    if not images:
        raise MedsegError(f"{patient}: no slice images (*.tif) found")
    images.sort(key=slice_number)
    numbers = [slice_number(p) for p in images]
    if len(set(numbers)) != len(numbers):
        raise MedsegError(f"{patient}: two images share slice number {max(numbers, key=numbers.count)}")
    return tuple(images)


def list_cases(raw: Path) -> list[CaseRef]:
    root = find_root(raw)
    patients = [p for p in subfolders(root) if p.name.startswith("TCGA_")]
    if not patients:
        raise MedsegError(f"{root}: no TCGA_* patient folders found")
    return [CaseRef(case_id=p.name, group=p.name, image=p, label=None, extra=_slice_images(p))
            for p in patients]


def _image(path: Path) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1], channels in file order: pre-contrast, FLAIR, post-contrast."""
    array = read_image(path)
    if array.ndim != 3 or array.shape[2] != CHANNELS or array.dtype != np.uint8:
        raise MedsegError(f"{path}: expected a {CHANNELS}-channel uint8 image, got {array.dtype} {array.shape}")
    return unit_image(array)  # channel 0 = the file's first


def read_case(case: CaseRef, cfg: ReaderConfig) -> Iterator[Slice]:
    """The patient's slices in acquisition order: the files' windowed uint8 scaled to [0, 1], or with
    `convert.normalize: volume` each channel rescaled to the patient's own MR range (the set keeps each
    scanner's brightness: one institution's FLAIR is half as bright as another's)."""
    images = [_image(p) for p in case.extra]
    if cfg.normalize == "volume":  # resolved by convert (never auto here)
        ranges = channel_ranges(images)
        images = [rescale_channels(image, ranges) for image in images]
    for image_path, image in zip(case.extra, images):
        mask = read_binary_mask(mask_path(image_path), image.shape[:2])
        yield Slice(index=slice_number(image_path), image=image, mask=mask, spacing=None)
