"""Any 2D dataset in a plain folder: images/<name>.<png|jpg|tif|bmp> paired by name with
masks/<name>[_mask].<png|tif|bmp>, masks binary (0/255 or 0/1) or label maps (small integers, of
which `dataset.labels` picks the foreground; null: every non-zero value).

Groups: without a groups.csv every image is its own group (each scored as one case). A groups.csv
beside the two folders, with the columns `image` (a file name in images/) and `group` (the patient
or volume id) and optionally `slice` (the image's position in its group; else name order), puts a
patient's images in one group, so the split never divides a patient and the per-patient scores
stack them in that order. Images and masks are paired by name, never by sorted position, so one
missing file is reported instead of shifting every later pair.
"""
from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from medseg.classes import BINARY, Classes
from medseg.datasets import CaseRef, ReaderConfig, Slice
from medseg.image_files import find_shallowest, is_clutter, label_values, read_label_map
from medseg.errors import MedsegError
from medseg.preprocess import channel_ranges, file_image, match_channels, rescale_channels

CHANNELS = 3  # grey images are repeated to three channels, so grey and colour files can share one set
EXPECTED: dict[str, int] = {}  # a user's own data: no published counts to compare with
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")  # lossless only: a JPEG mask's edges are not labels
MASK_TAILS = ("", "_mask", "_seg", "_segmentation", "_label")
IMAGES, MASKS, GROUPS = "images", "masks", "groups.csv"
MAX_SEARCH_DEPTH = 2


def count_summary(cases: list[CaseRef]) -> dict[str, int]:
    return {"groups": len(cases), "images": sum(len(c.extra) for c in cases)}


def find_root(raw: Path) -> Path:
    """The shallowest folder (raw itself or up to two levels down) holding images/ and masks/."""
    return find_shallowest(raw, lambda p: (p / IMAGES).is_dir() and (p / MASKS).is_dir(), MAX_SEARCH_DEPTH,
                           f"{IMAGES}/ and {MASKS}/ folders side by side (expected the 2D folder layout)")


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in suffixes and not is_clutter(p.name))


def _by_stem(files: list[Path]) -> dict[str, Path]:
    """{stem: file}; two files with one stem (a.png and a.tif) are an error, not a silent pick."""
    found: dict[str, Path] = {}
    for path in files:
        if path.stem in found:
            raise MedsegError(f"{path}: two files named {path.stem} (also {found[path.stem].name}); keep one")
        found[path.stem] = path
    return found


def _mask_stem(stem: str, images: dict[str, Path]) -> str:
    """The image stem a mask stem belongs to: itself, or itself without a _mask-like tail."""
    if stem in images:
        return stem
    for tail in MASK_TAILS[1:]:
        if stem.endswith(tail) and stem[: -len(tail)] in images:
            return stem[: -len(tail)]
    return stem


def pair_files(root: Path) -> dict[str, tuple[Path, Path]]:
    """{image name: (image, mask)}, every image with exactly one mask and every mask with its image."""
    images = _by_stem(_files(root / IMAGES, IMAGE_SUFFIXES))
    if not images:
        raise MedsegError(f"{root / IMAGES}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    masks: dict[str, Path] = {}
    for path in _files(root / MASKS, MASK_SUFFIXES):
        stem = _mask_stem(path.stem, images)
        if stem not in images:
            raise MedsegError(f"{path}: mask without an image named {stem} in {root / IMAGES}")
        if stem in masks:
            raise MedsegError(f"{path}: a second mask for image {images[stem].name} (also {masks[stem].name})")
        masks[stem] = path
    unmasked = sorted(images.keys() - masks.keys())
    if unmasked:
        raise MedsegError(f"{images[unmasked[0]]}: no mask named {unmasked[0]}"
                          f"[{'|'.join(MASK_TAILS[1:])}].png/.tif in {root / MASKS}")
    return {images[s].name: (images[s], masks[s]) for s in images}


def _read_groups(path: Path, pairs: dict[str, tuple[Path, Path]]) -> dict[str, list[tuple[float, str]]]:
    """{group: [(slice position, image name)]} from groups.csv, which must list every image once."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"image", "group"} - set(reader.fieldnames or [])
        if missing:
            raise MedsegError(f"{path}: missing column(s) {', '.join(sorted(missing))} (expected image,group[,slice])")
        rows = list(reader)
    groups: dict[str, list[tuple[float, str]]] = {}
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        name, group = (row["image"] or "").strip(), (row["group"] or "").strip()
        if name not in pairs:
            raise MedsegError(f"{path}: line {line}: image {name!r} is not in {IMAGES}/")
        if name in seen:
            raise MedsegError(f"{path}: line {line}: image {name} listed twice")
        if not group:
            raise MedsegError(f"{path}: line {line}: empty group for image {name}")
        seen.add(name)
        groups.setdefault(group, []).append((_position(path, line, row.get("slice"), len(groups[group])), name))
    unlisted = sorted(pairs.keys() - seen)
    if unlisted:
        raise MedsegError(f"{path}: image {unlisted[0]} is not listed ({len(unlisted)} unlisted); "
                          "list every image with its group")
    return groups


def _position(path: Path, line: int, text: str | None, default: int) -> float:
    if text is None or not text.strip():
        return float(default)
    try:
        value = float(text)
    except ValueError:
        raise MedsegError(f"{path}: line {line}: slice {text!r} is not a number") from None
    if not np.isfinite(value):
        raise MedsegError(f"{path}: line {line}: slice {text!r} is not a finite number")
    return value


def list_cases(raw: Path) -> list[CaseRef]:
    """One case per group: its (image, mask) pairs in slice order (one pair when ungrouped)."""
    root = find_root(raw)
    pairs = pair_files(root)
    if not (root / GROUPS).is_file():
        return [CaseRef(case_id=Path(name).stem, group=Path(name).stem, image=image, label=mask,
                        extra=((image, mask),)) for name, (image, mask) in sorted(pairs.items())]
    cases = []
    for group, members in sorted(_read_groups(root / GROUPS, pairs).items()):
        positions = [p for p, _ in members]
        if len(set(positions)) != len(positions):
            raise MedsegError(f"{root / GROUPS}: group {group} has two images at slice {max(positions, key=positions.count):g}")
        ordered = tuple(pairs[name] for _, name in sorted(members))
        cases.append(CaseRef(case_id=group, group=group, image=ordered[0][0], label=ordered[0][1], extra=ordered))
    return cases


def foreground(label: np.ndarray, labels: list[int] | None, classes: Classes = BINARY) -> np.ndarray:
    """The mask `dataset.labels` selects from a label map (null: every non-zero value), or with
    several classes their uint8 codes (medseg.classes)."""
    if classes.multi:
        return classes.encode(label)
    return label > 0 if labels is None else np.isin(label, labels)


def read_case(case: CaseRef, cfg: ReaderConfig) -> Iterator[Slice]:
    """The group's images in slice order, each as (H, W, 3) in [0, 1] with its mask; with
    `convert.normalize: volume` each channel rescaled to the group's own intensity range."""
    images = [match_channels(file_image(image), CHANNELS) for image, _ in case.extra]
    if cfg.normalize == "volume":  # resolved by convert (never auto here)
        ranges = channel_ranges(images)
        images = [rescale_channels(image, ranges) for image in images]
    for index, ((_, mask_file), image) in enumerate(zip(case.extra, images)):
        label = read_label_map(mask_file, image.shape[:2])
        yield Slice(index=index, image=image, mask=foreground(label, cfg.labels, cfg.classes), spacing=None,
                    label_values=label_values(label))
