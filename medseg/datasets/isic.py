"""ISIC 2018 Task 1 layout (tschandl/isic2018-challenge-task1-data-segmentation): dermoscopy
ISIC2018_Task1-2_<Split>_Input/ISIC_<id>.jpg with ISIC2018_Task1_<Split>_GroundTruth/ISIC_<id>_segmentation.png.

Images and masks are paired by their id, never by sorted position, so one missing file is
reported instead of shifting every later pair. Training is always read; the validation and test
splits only where their ground truth folder exists. There are no patient ids: each image is its
own group. A JPEG cut short still decodes in OpenCV (grey bottom rows and a libjpeg warning on
stderr only), so JPEGs are checked for their end-of-image marker by hand; no library exposes it.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from medseg.datasets import CaseRef, ReaderConfig, Slice
from medseg.image_files import find_shallowest, is_clutter, read_binary_mask, read_image
from medseg.errors import MedsegError
from medseg.preprocess import match_channels, unit_image

log = logging.getLogger(__name__)

CHANNELS = 3
EXPECTED = {"images": 2594}  # ISIC 2018 Task 1 training pairs
SPLITS = ("Training", "Validation", "Test")
IMAGE_NAME = re.compile(r"(ISIC_\d+)\.jpe?g", re.IGNORECASE)
MASK_NAME = re.compile(r"(ISIC_\d+)_segmentation\.png", re.IGNORECASE)
MAX_SEARCH_DEPTH = 2


def count_summary(cases: list[CaseRef]) -> dict[str, int]:
    return {"images": len(cases)}


def input_dir_name(split: str) -> str:
    return f"ISIC2018_Task1-2_{split}_Input"


def truth_dir_name(split: str) -> str:
    return f"ISIC2018_Task1_{split}_GroundTruth"


def find_root(raw: Path) -> Path:
    """The shallowest folder (raw itself or up to two levels down) holding the training input folder."""
    return find_shallowest(raw, lambda p: (p / input_dir_name("Training")).is_dir(), MAX_SEARCH_DEPTH,
                           f"{input_dir_name('Training')}/ folder found (expected the ISIC 2018 layout)")


def _by_id(folder: Path, pattern: re.Pattern[str]) -> dict[str, Path]:
    """{ISIC id: file} for the files in `folder` matching `pattern` (LICENSE, ATTRIBUTION skipped);
    two files with one id (ISIC_1.jpg and ISIC_1.JPG or .jpeg) are an error, not a silent pick."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        match = pattern.fullmatch(path.name)
        if not match or is_clutter(path.name):
            continue
        if match.group(1) in found:
            raise MedsegError(f"{path}: duplicate id {match.group(1)} (also {found[match.group(1)].name}); "
                              "keep one file per id")
        found[match.group(1)] = path
    return found


def _split_cases(images_dir: Path, masks_dir: Path) -> list[CaseRef]:
    images, masks = _by_id(images_dir, IMAGE_NAME), _by_id(masks_dir, MASK_NAME)
    unmasked, orphans = sorted(images.keys() - masks.keys()), sorted(masks.keys() - images.keys())
    if unmasked:
        raise MedsegError(f"{images[unmasked[0]]}: no mask file {unmasked[0]}_segmentation.png in {masks_dir}")
    if orphans:
        raise MedsegError(f"{masks[orphans[0]]}: mask without image file {orphans[0]}.jpg in {images_dir}")
    return [CaseRef(case_id=cid, group=cid, image=images[cid], label=masks[cid]) for cid in sorted(images)]


def _split_dirs(root: Path) -> list[tuple[Path, Path]]:
    """(input, ground truth) folder pairs to read: training, plus any other split with ground truth."""
    pairs = []
    for split in SPLITS:
        images_dir, masks_dir = root / input_dir_name(split), root / truth_dir_name(split)
        if images_dir.is_dir() and masks_dir.is_dir():
            pairs.append((images_dir, masks_dir))
        elif split == "Training":
            raise MedsegError(f"{masks_dir}: missing (the training masks)")
        elif images_dir.is_dir():
            log.info("%s: no ground truth folder %s; split skipped", images_dir, masks_dir.name)
    return pairs


def list_cases(raw: Path) -> list[CaseRef]:
    root = find_root(raw)
    cases = [case for images_dir, masks_dir in _split_dirs(root) for case in _split_cases(images_dir, masks_dir)]
    repeated = [cid for cid, n in Counter(c.case_id for c in cases).items() if n > 1]
    if repeated:
        raise MedsegError(f"{root}: image id {repeated[0]} appears in two splits")
    if not cases:
        raise MedsegError(f"{root / input_dir_name('Training')}: no ISIC_<id>.jpg images found")
    return cases


def _rgb(path: Path) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1]; grey images are repeated to 3 channels, alpha dropped."""
    array = read_image(path)
    if array.dtype != np.uint8:
        raise MedsegError(f"{path}: expected 8-bit pixels, got {array.dtype}")
    return match_channels(unit_image(array), CHANNELS)


def read_case(case: CaseRef, cfg: ReaderConfig) -> Iterator[Slice]:
    """One slice: the dermoscopy image at its own size and its lesion mask."""
    image = _rgb(case.image)
    yield Slice(index=0, image=image, mask=read_binary_mask(case.label, image.shape[:2]), spacing=None)
