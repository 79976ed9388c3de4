"""SIIM-ACR pneumothorax layout (Kaggle mirror jesperdramsch/siim-acr-pneumothorax-segmentation-data):
dicom-images-train/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm chest X-rays and train-rle.csv
(`ImageId, EncodedPixels`, one row per pneumothorax instance, `-1` for none).

The mirror ships the set twice (top level and pneumothorax/); only the shallowest folder holding
both dicom-images-train/ and train-rle.csv is read, so no image is counted twice. Each ImageId is
the SOPInstanceUID and the DICOM's file stem, so images are paired by name, never by order; its
rows are unioned into one mask (the challenge scores one mask per image). DICOMs are indexed in
every dicom-images-*/ folder of that root: the full CSV (12,047 ImageIds) may also label images
that a copy keeps in dicom-images-test/; DICOMs without a row are reported and left out.

Privacy: the group is "pt_" + the first 16 hex digits of sha256(PatientID), read from the header
only (stop_before_pixels) as raw bytes that pydicom never decodes, so not even its validation
warnings can echo the value ("img_" + a hash of the ImageId when the header has no PatientID).
No PatientName, PatientID or PatientBirthDate value is logged, put in an error message or
returned. Images with identical pixels under different PatientIDs are not detected here (that
needs every image decoded); they are merged into one group at split time.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom

from medseg.datasets import CaseRef, ReaderConfig, Slice
from medseg.datasets.rle import EMPTY, parse_rle, rle_decode
from medseg.image_files import find_shallowest, is_clutter
from medseg.errors import MedsegError, cannot
from medseg.preprocess import dicom_image

log = logging.getLogger(__name__)

CHANNELS = 1
EXPECTED = {"images": 12047}  # unique ImageIds of the challenge's train-rle.csv (2,669 positive)
CSV_NAME = "train-rle.csv"
DICOM_DIR = "dicom-images-train"
DICOM_DIRS_GLOB = "dicom-images-*"
COLUMNS = ("ImageId", "EncodedPixels")
MAX_SEARCH_DEPTH = 3


def count_summary(cases: list[CaseRef]) -> dict[str, int]:
    return {"images": len(cases)}


def find_root(raw: Path) -> Path:
    """The shallowest folder under `raw` (raw included) holding dicom-images-train/ and train-rle.csv."""
    return find_shallowest(raw, lambda p: (p / DICOM_DIR).is_dir() and (p / CSV_NAME).is_file(),
                           MAX_SEARCH_DEPTH, f"folder holding both {DICOM_DIR}/ and {CSV_NAME} (the SIIM layout)",
                           prune=lambda p: p.name.startswith("dicom-images"))


def read_labels(csv: Path) -> dict[str, tuple[str, ...]]:
    """ImageId -> its non-empty RLE strings (() for an image labelled -1), each checked for syntax."""
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise cannot(csv, "read CSV", err) from err
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise MedsegError(f"{csv}: no column {missing[0]!r} (header must be 'ImageId, EncodedPixels')")
    labels: dict[str, list[str]] = {}
    for line, image_id, rle in zip(range(2, len(table) + 2), table["ImageId"], table["EncodedPixels"]):
        image_id, rle = image_id.strip(), rle.strip()
        if not image_id:
            raise MedsegError(f"{csv}: line {line}: empty ImageId")
        try:
            parse_rle(rle)
        except MedsegError as err:
            raise MedsegError(f"{csv}: line {line} (ImageId {image_id}): {err}") from None
        runs = labels.setdefault(image_id, [])
        if rle != EMPTY:
            runs.append(rle)
    return {image_id: tuple(runs) for image_id, runs in labels.items()}


def index_dicoms(root: Path) -> dict[str, Path]:
    """File stem (the SOPInstanceUID) -> path of every .dcm under root/dicom-images-*/, walked once."""
    found: dict[str, Path] = {}
    duplicates = 0
    for top in sorted(p for p in root.glob(DICOM_DIRS_GLOB) if p.is_dir()):
        for folder, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not is_clutter(d))
            for name in sorted(files):
                if is_clutter(name) or not name.lower().endswith(".dcm"):
                    continue
                stem = name[: -len(".dcm")]
                if stem in found:
                    duplicates += 1
                    continue
                found[stem] = Path(folder) / name
    if duplicates:
        log.warning("%s: %d DICOM files repeat an ImageId already found; the first copy is used", root, duplicates)
    return found


def _read_header(path: Path) -> pydicom.Dataset:
    """The header up to the pixel data; a file cut short before Rows/Columns is an error."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as err:  # pydicom raises many types for broken files
        raise cannot(path, "read DICOM", err) from err
    if "Rows" not in ds or "Columns" not in ds:
        raise MedsegError(f"{path}: cannot read DICOM (no Rows/Columns: truncated, or not an image)")
    return ds


def _patient_id(ds: pydicom.Dataset) -> bytes:
    """The raw PatientID bytes: never decoded, so pydicom cannot log the value while validating it."""
    item = ds.get_item("PatientID")
    value = item.value if item is not None else None
    if isinstance(value, str):
        value = value.encode()
    return bytes(value or b"").strip(b" \x00")


def patient_group(path: Path) -> str:
    """'pt_' + 16 hex digits of sha256(PatientID): groups a patient's images without storing the id."""
    patient = _patient_id(_read_header(path))
    if not patient:
        return "img_" + hashlib.sha256(path.stem.encode()).hexdigest()[:16]
    return "pt_" + hashlib.sha256(patient).hexdigest()[:16]


def list_cases(raw: Path) -> list[CaseRef]:
    root = find_root(raw)
    csv = root / CSV_NAME
    labels = read_labels(csv)
    dicoms = index_dicoms(root)
    unlabelled = len(set(dicoms) - set(labels))
    if unlabelled:
        log.warning("%s: %d DICOM images have no row in %s; left out", root, unlabelled, CSV_NAME)
    orphans = len(set(labels) - set(dicoms))
    if orphans:
        log.warning("%s: %d ImageIds have no DICOM file under %s/; left out", csv, orphans, DICOM_DIRS_GLOB)
    cases = [CaseRef(case_id=image_id, group=patient_group(dicoms[image_id]), image=dicoms[image_id],
                     label=csv, extra=labels[image_id])
             for image_id in sorted(set(labels) & set(dicoms))]
    if not cases:
        raise MedsegError(f"{root}: no DICOM file matches an ImageId of {CSV_NAME}")
    return cases


def _spacing(ds: pydicom.Dataset) -> tuple[float, float, float] | None:
    """(row mm, column mm, 0) from PixelSpacing; None when the header has no usable pair."""
    value = ds.get("PixelSpacing")
    try:
        row_mm, col_mm = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return row_mm, col_mm, 0.0


def read_mask(case: CaseRef, height: int, width: int) -> np.ndarray:
    """The union of the case's RLE rows, decoded at the DICOM's Rows x Columns."""
    mask = np.zeros((height, width), bool)
    for rle in case.extra:
        try:
            mask |= rle_decode(rle, height, width)
        except MedsegError as err:
            raise MedsegError(f"{case.label}: ImageId {case.case_id}: {err}; "
                              f"the DICOM is {height}x{width}") from None
    return mask


def read_case(case: CaseRef, cfg: ReaderConfig) -> Iterator[Slice]:
    ds, image = dicom_image(case.image)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if image.shape[:2] != (rows, cols):
        raise MedsegError(f"{case.image}: pixel array {image.shape[:2]} differs from Rows x Columns {rows}x{cols}")
    yield Slice(index=0, image=image, mask=read_mask(case, rows, cols), spacing=_spacing(ds))
