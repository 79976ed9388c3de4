"""The converted slice store, data/slices/: images/ and masks/ PNGs plus manifest.csv."""
from __future__ import annotations

import hashlib
import importlib
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from medseg.datasets import CaseRef, Slice
from medseg.errors import MedsegError

MANIFEST_COLUMNS = ["slice_id", "group", "source", "index", "fg_pixels", "spacing", "height", "width",
                    "pixel_hash"]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def _write_png(path: Path, array: np.ndarray) -> None:
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim == 3:
        array = array[..., 0]
    if not cv2.imwrite(str(path), array):
        raise MedsegError(f"{path}: cannot write PNG")


def _resized(sl: Slice, size: int) -> tuple[np.ndarray, np.ndarray]:
    image = cv2.resize(sl.image, (size, size), interpolation=cv2.INTER_AREA)
    if image.ndim == 2:
        image = image[..., None]
    mask = cv2.resize(sl.mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    return image, mask


def pixel_hash(pixels: np.ndarray) -> str:
    """Content hash of a slice, so images stored twice under two ids share a split group;
    empty for constant slices (blank slices of different patients must not be merged)."""
    if pixels.min() == pixels.max():
        return ""
    return hashlib.sha256(pixels.tobytes()).hexdigest()[:20]


def convert_case(fmt_name: str, case: CaseRef, cfg: dict[str, Any], raw: Path, out: Path) -> list[dict]:
    """Read one case with its format module, write its slices, return its manifest rows."""
    fmt = importlib.import_module(fmt_name)
    rows = []
    size = cfg["size"]
    for sl in fmt.read_case(case, cfg):
        image, mask = _resized(sl, size)
        slice_id = f"{case.case_id}_{sl.index:04d}"
        pixels = _to_uint8(image)
        _write_png(out / "images" / f"{slice_id}.png", pixels)
        _write_png(out / "masks" / f"{slice_id}.png", mask * 255)
        spacing = ""
        if sl.spacing is not None:
            h, w = sl.mask.shape
            spacing = f"{sl.spacing[0] * h / size:.4f}x{sl.spacing[1] * w / size:.4f}x{sl.spacing[2]:.4f}"
        rows.append({
            "slice_id": slice_id, "group": case.group, "source": str(case.image.relative_to(raw)),
            "index": sl.index, "fg_pixels": int(mask.sum()), "spacing": spacing,
            "height": sl.mask.shape[0], "width": sl.mask.shape[1], "channels": image.shape[2],
            "pixel_hash": pixel_hash(pixels),
        })
    return rows


def convert_all(fmt_name: str, cases: list[CaseRef], cfg: dict[str, Any], raw: Path, out: Path) -> pd.DataFrame:
    """Convert every case (in `cfg['workers']` processes) into `out`; return the manifest."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    rows: list[dict] = []
    bar = tqdm(total=len(cases), desc="convert", unit="case")
    if cfg["workers"] <= 1:
        for case in cases:
            rows += convert_case(fmt_name, case, cfg, raw, out)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=cfg["workers"]) as pool:
            futures = [pool.submit(convert_case, fmt_name, c, cfg, raw, out) for c in cases]
            for fut in futures:
                rows += fut.result()
                bar.update()
    bar.close()
    if not rows:
        raise MedsegError(f"{raw}: the dataset holds no slices")
    manifest = pd.DataFrame(rows)
    dupes = manifest["slice_id"][manifest["slice_id"].duplicated()]
    if len(dupes):
        raise MedsegError(f"{raw}: duplicate slice id {dupes.iloc[0]!r}")
    return manifest


def read_manifest(slices: Path) -> pd.DataFrame:
    path = slices / "manifest.csv"
    if not path.exists():
        raise MedsegError(f"{path}: missing; run the convert stage first")
    return pd.read_csv(path, dtype={"slice_id": str, "group": str, "spacing": str, "pixel_hash": str},
                       keep_default_na=False)


def dataset_info(slices: Path) -> dict[str, Any]:
    return json.loads((slices / "info.json").read_text())


def read_png(path: Path, channels: int) -> np.ndarray:
    """Decode a slice PNG as (H, W, channels) uint8 RGB, or (H, W) for masks (channels=0)."""
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise MedsegError(f"{path}: cannot read image")
    if channels == 0:
        return array if array.ndim == 2 else array[..., 0]
    if array.ndim == 2:
        array = array[..., None]
    elif array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    return array


def load_arrays(slices: Path, slice_ids: list[str], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode the listed slices once into (N, H, W, C) uint8 images and (N, H, W) uint8 {0,1} masks."""
    images = np.stack([read_png(slices / "images" / f"{s}.png", channels) for s in slice_ids])
    masks = np.stack([read_png(slices / "masks" / f"{s}.png", 0) for s in slice_ids])
    return images, (masks > 127).astype(np.uint8)
