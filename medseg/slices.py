"""Reading the slice store (data/slices/) and the split over it: what every stage after
`convert` sees of the data."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from medseg import paths
from medseg.classes import BINARY, Classes, of_preprocess
from medseg.image_files import read_image
from medseg.errors import MedsegError, cannot

SLICES = paths.SLICES


def read_table(path: Path, stage: str, columns: tuple[str, ...], **read_csv: Any) -> pd.DataFrame:
    """A CSV a stage before this one writes, with `columns`; missing, unreadable or without them is
    one line naming the file and the stage that makes it (a stage run out of order, or cut short)."""
    if not path.exists():
        raise MedsegError(f"{path}: missing; run the {stage} stage first")
    try:
        table = pd.read_csv(path, **read_csv)
    except (OSError, ValueError, pd.errors.ParserError) as err:  # EmptyDataError is a ValueError
        raise cannot(path, "read CSV", err, f"; run the {stage} stage again") from err
    lacking = [c for c in columns if c not in table.columns]
    if lacking:
        raise MedsegError(f"{path}: no column {lacking[0]!r}; run the {stage} stage again")
    return table


def read_manifest(slices: Path = paths.SLICES) -> pd.DataFrame:
    return read_table(slices / "manifest.csv", "convert", ("slice_id", "group", "fg_pixels"),
                      dtype={"slice_id": str, "group": str, "spacing": str, "pixel_hash": str},
                      keep_default_na=False)


def dataset_info(slices: Path = paths.SLICES) -> dict[str, Any]:
    """info.json of the slice store: dataset, channels, size and CT window `convert` wrote."""
    path = slices / "info.json"
    if not path.exists():
        raise MedsegError(f"{path}: missing; run the convert stage first")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise MedsegError(f"{path}: not valid JSON ({err}); run the convert stage again") from err


def read_png(path: Path, channels: int) -> np.ndarray:
    """Decode a slice PNG as (H, W, channels) uint8 RGB (2 channels: the first two of the stored 3,
    4 channels as stored), or (H, W) for masks (channels=0)."""
    array = read_image(path)
    if channels == 0:
        return array if array.ndim == 2 else array[..., 0]
    if array.ndim == 2:
        array = array[..., None]
    elif array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    return array[..., :channels]


def slice_classes(slices: Path = paths.SLICES) -> Classes:
    """The classes the slice store was converted with (info.json); binary when it records none."""
    info = slices / "info.json"
    return of_preprocess(dataset_info(slices), str(info)) if info.exists() else BINARY


def load_arrays(slices: Path, slice_ids: list[str], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode the listed slices once into (N, H, W, C) uint8 images and (N, H, W) uint8 masks: {0, 1}
    for a binary store, the class codes (medseg.classes) for a multi-class one."""
    images = np.stack([read_png(slices / "images" / f"{s}.png", channels) for s in slice_ids])
    masks = np.stack([read_png(slices / "masks" / f"{s}.png", 0) for s in slice_ids])
    return images, masks if slice_classes(slices).multi else (masks > 127).astype(np.uint8)


def read_split(path: Path = paths.SPLIT_CSV) -> pd.DataFrame:
    """slice_id -> split (train/val/test) and group, as the `split` stage wrote it."""
    return read_table(path, "split", ("slice_id", "split", "group"), dtype={"slice_id": str, "group": str})


def split_rows(name: str, slices: Path = paths.SLICES, split_csv: Path = paths.SPLIT_CSV) -> pd.DataFrame:
    """The manifest rows of split `name` (train, val or test) in manifest order, with their split
    (and fold, when the split has cross-validation folds)."""
    split = read_split(split_csv)
    manifest = read_manifest(slices)
    unknown = ~split["slice_id"].isin(manifest["slice_id"])
    unsplit = ~manifest["slice_id"].isin(split["slice_id"])
    if unknown.any() or unsplit.any():  # a split of another conversion would silently drop or mix slices
        example = split["slice_id"][unknown].iloc[0] if unknown.any() else manifest["slice_id"][unsplit].iloc[0]
        raise MedsegError(f"{split_csv}: does not match {slices / 'manifest.csv'} ({int(unknown.sum())} slice ids "
                          f"not in it, {int(unsplit.sum())} of it not split, e.g. {example}); it was made from other "
                          "slices: run the split stage again")
    rows = manifest.merge(split[["slice_id", "split", *(["fold"] if "fold" in split else [])]], on="slice_id")
    return rows[rows["split"] == name].reset_index(drop=True)


def fold_count(split_csv: Path = paths.SPLIT_CSV) -> int:
    """K of `split.folds` as the split stage wrote it: 1 for a plain train/val split."""
    split = read_split(split_csv)
    return int(split["fold"].max()) + 1 if "fold" in split else 1


def fold_rows(fold: int, role: str, slices: Path = paths.SLICES, split_csv: Path = paths.SPLIT_CSV) -> pd.DataFrame:
    """The rows fold `fold` trains on (`role` "train") or validates on ("val"). Without folds,
    fold 0 is the plain train/val split, so one code path serves both layouts."""
    if fold_count(split_csv) == 1:
        return split_rows(role, slices, split_csv)
    pool = split_rows("train", slices, split_csv)
    return pool[(pool["fold"] == fold) == (role == "val")].reset_index(drop=True)


def read_sampling(path: Path = paths.SAMPLING_CSV, slices: Path = paths.SLICES,
                  split_csv: Path = paths.SPLIT_CSV) -> pd.DataFrame:
    """slice_id -> repeats per epoch of the train split, as the `balance` stage wrote it: exactly the
    slices the split trains on (with K folds, the pooled train and val), or the file was made for
    another split or fold layout (`split.folds` changed and balance not re-run) and is refused."""
    table = read_table(path, "balance", ("slice_id", "repeats"), dtype={"slice_id": str})
    train = split_rows("train", slices, split_csv)["slice_id"]
    foreign, uncovered = ~table["slice_id"].isin(train), ~train.isin(table["slice_id"])
    if foreign.any() or uncovered.any():
        example = table["slice_id"][foreign].iloc[0] if foreign.any() else train[uncovered].iloc[0]
        raise MedsegError(f"{path}: does not cover the train split of {split_csv} ({int(foreign.sum())} of its slices "
                          f"not in it, {int(uncovered.sum())} train slices missing, e.g. {example}); it was made for "
                          "another split or fold layout: run the balance stage again")
    return table
