"""Writing the slice store (data/slices/: images/ and masks/ PNGs plus manifest.csv) from raw cases.

A case is converted all or nothing: with `convert.on_error: skip` an unreadable case is left out
whole (no slice of it written) and reported, instead of stopping the stage.
"""
from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from medseg.classes import BINARY, Classes
from medseg.datasets import CaseRef, ReaderConfig, Slice
from medseg.errors import MedsegError
from medseg.params import ConvertParams
from medseg.preprocess import model_input, model_mask

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["slice_id", "group", "source", "index", "fg_pixels", "spacing", "height", "width",
                    "pixel_hash"]
SKIPPED_COLUMNS = ["case_id", "source", "error"]


def _write_png(path: Path, array: np.ndarray) -> None:
    """One slice as PNG: grey, RGB, or 4 channels (a 4-modality MSD task) as stored RGBA; PNG has no
    2-channel colour type, so 2 channels (e.g. T2 + ADC) go as RGB with an empty third channel."""
    if array.ndim == 3 and array.shape[2] > 4:
        raise MedsegError(f"{path}: {array.shape[2]} image channels; a slice PNG holds at most 4")
    if array.ndim == 3 and array.shape[2] == 2:
        array = np.concatenate([array, np.zeros_like(array[..., :1])], axis=2)
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not cv2.imwrite(str(path), array):
        raise MedsegError(f"{path}: cannot write PNG")


def pixel_hash(pixels: np.ndarray) -> str:
    """Content hash of a slice, so images stored twice under two ids share a split group;
    empty for constant slices (blank slices of different patients must not be merged)."""
    if pixels.min() == pixels.max():
        return ""
    return hashlib.sha256(pixels.tobytes()).hexdigest()[:20]


def convert_case(fmt_name: str, case: CaseRef, cfg: ReaderConfig, raw: Path, out: Path) -> list[dict]:
    """Read one case with its format module, write its slices, return its manifest rows.

    All or nothing: when reading fails part-way, the slices already written are removed again,
    so a skipped case leaves no file behind."""
    fmt = importlib.import_module(fmt_name)
    rows: list[dict] = []
    written: list[Path] = []
    try:
        for sl in fmt.read_case(case, cfg):
            rows.append(_write_slice(case, sl, cfg, raw, out, written))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return rows


def _write_slice(case: CaseRef, sl: Slice, cfg: ReaderConfig, raw: Path, out: Path, written: list[Path]) -> dict:
    """Write one slice's image and mask PNGs (appending their paths to `written`); its manifest row.
    A binary mask is stored as 0/255 (readable as a picture), several classes as their codes."""
    size, classes = cfg.size, cfg.classes
    pixels, mask = model_input(sl.image, size, sl.image.shape[2]), model_mask(sl.mask, size)
    slice_id = f"{case.case_id}_{sl.index:04d}"
    for folder, array in (("images", pixels), ("masks", mask if classes.multi else mask * 255)):
        path = out / folder / f"{slice_id}.png"
        written.append(path)
        _write_png(path, array)
    spacing = ""
    if sl.spacing is not None:
        h, w = sl.mask.shape
        spacing = f"{sl.spacing[0] * h / size:.4f}x{sl.spacing[1] * w / size:.4f}x{sl.spacing[2]:.4f}"
    return {
        "slice_id": slice_id, "group": case.group, "source": str(case.image.relative_to(raw)),
        "index": sl.index, "fg_pixels": int((mask > 0).sum()), "spacing": spacing,
        "height": sl.mask.shape[0], "width": sl.mask.shape[1], "channels": pixels.shape[2],
        "pixel_hash": pixel_hash(pixels), "label_values": sl.label_values,  # the last not in manifest.csv
        **class_pixels(classes, mask),
    }


def class_pixels(classes: Classes, codes: np.ndarray) -> dict[str, int]:
    """Per-class foreground pixels of one slice's codes, as manifest columns class_<name> (none when binary)."""
    if not classes.multi:
        return {}
    counts = classes.masks_of(codes[None])[0].sum(axis=(1, 2))
    return {f"class_{name}": int(n) for name, n in zip(classes.names, counts)}


def manifest_columns(classes: Classes) -> list[str]:
    """manifest.csv's columns: MANIFEST_COLUMNS, then one class_<name> (its foreground pixels) per class of a multi-class dataset."""
    return MANIFEST_COLUMNS + (list(class_pixels(classes, np.zeros((1, 1), np.uint8))) if classes.multi else [])


def convert_or_skip(case: CaseRef, fmt_name: str, cfg: ReaderConfig, raw: Path, out: Path,
                    skip: bool) -> tuple[list[dict], dict[str, str] | None]:
    """(rows, None) for a converted case; ([], skipped-row) for an unreadable one when `skip`
    (convert.on_error: skip); otherwise the MedsegError propagates."""
    try:
        return convert_case(fmt_name, case, cfg, raw, out), None
    except MedsegError as err:
        if not skip:
            raise
        return [], {"case_id": case.case_id, "source": str(case.image.relative_to(raw)), "error": str(err)}


def _convert_in_pool(convert_one: Callable, cases: list[CaseRef], workers: int,
                     bar: tqdm) -> list[tuple[list[dict], dict[str, str] | None]]:
    """`convert_one` (convert_or_skip with all but the case bound) over `cases` in `workers`
    processes, results in case order. On the first error the queued cases are cancelled and the
    running ones finish before it propagates, so no worker still writes into the output folder when
    the caller removes it."""
    results = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(convert_one, c) for c in cases]
        try:
            for fut in futures:
                results.append(fut.result())
                bar.update()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results


def convert_all(fmt_name: str, cases: list[CaseRef], cfg: ReaderConfig, convert: ConvertParams, raw: Path,
                out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Convert every case (in `convert.workers` processes) into `out`; return the manifest and
    the skipped cases (case_id, source, error; empty unless `convert.on_error` is 'skip')."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    with tqdm(total=len(cases), desc="convert", unit="case") as bar:  # closed before an error line prints
        convert_one = partial(convert_or_skip, fmt_name=fmt_name, cfg=cfg, raw=raw, out=out,
                              skip=convert.on_error == "skip")
        if convert.workers <= 1:
            results = []
            for case in cases:
                results.append(convert_one(case))
                bar.update()
        else:
            results = _convert_in_pool(convert_one, cases, convert.workers, bar)
    rows = [row for case_rows, _ in results for row in case_rows]
    skipped = pd.DataFrame([s for _, s in results if s is not None], columns=SKIPPED_COLUMNS)
    if cases and len(skipped) == len(cases):
        raise MedsegError(f"{raw}: no readable cases ({len(cases)} skipped; first: {skipped['error'].iloc[0]})")
    if not rows:
        raise MedsegError(f"{raw}: the dataset holds no slices")
    manifest = pd.DataFrame(rows)
    dupes = manifest["slice_id"][manifest["slice_id"].duplicated()]
    if len(dupes):
        raise MedsegError(f"{raw}: duplicate slice id {dupes.iloc[0]!r}")
    counts = sorted(manifest["channels"].unique().tolist())
    if len(counts) > 1:
        first = manifest.groupby("channels")["group"].first()
        raise MedsegError(f"{raw}: cases differ in image channels ({', '.join(map(str, counts))}; e.g. "
                          f"{', '.join(f'{g}: {c}' for c, g in first.items())}); a network takes one channel count")
    return manifest, skipped


def check_label_values(labels: list[int] | None, manifest: pd.DataFrame, classes: Classes = BINARY) -> None:
    """`dataset.labels` (or each of `dataset.classes`) against the label values the converted volumes
    hold: none of them found is an error (every mask, or every mask of that class, would be empty),
    some of them a warning naming the values that match nothing."""
    if "label_values" not in manifest:
        return
    found = sorted({int(v) for values in manifest["label_values"] for v in values})
    if classes.multi:
        for name, values in zip(classes.names, classes.values):
            _check_values(f"dataset.classes.{name}", list(values), found)
    elif labels is not None:
        _check_values("dataset.labels", labels, found)


def _check_values(key: str, labels: list[int], found: list[int]) -> None:
    unmatched = [v for v in labels if v not in found]
    held = ", ".join(map(str, found)) or "only 0"
    if len(unmatched) == len(labels):
        raise MedsegError(f"params.yaml: {key}={labels} matches no label value of the data (its labels "
                          f"hold {held}); list the values that form the foreground")
    if unmatched:
        log.warning("params.yaml: %s value(s) %s occur in no label of the data (it holds %s); "
                    "the foreground is %s alone", key, ", ".join(map(str, unmatched)), held,
                    ", ".join(str(v) for v in labels if v in found))
