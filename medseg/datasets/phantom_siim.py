"""Synthetic chest X-rays written in the SIIM-ACR pneumothorax layout (DICOM + train-rle.csv).

Hand-written: no library generates pneumothorax radiographs. The files go through the same reader
as the real set: DICOMs under dicom-images-train/<study>/<series>/<sop>.dcm, the CSV with the
mirror's header `ImageId, EncodedPixels` (leading space), ` -1` for empty images, relative
column-major RLE, and some positives split over two rows so the reader's union is exercised.
Every image carries fake PatientName / PatientID / PatientBirthDate values so tests can check
that none of them leaks; image 5k+1 shares the PatientID of image 5k, as a patient with two
studies would.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medseg.datasets.rle import rle_encode

BITS = 12
HEADER = "ImageId, EncodedPixels"
POSITIVE_FRACTION = 0.3
AIR, SOFT, LUNG, MEDIASTINUM, RIB, PTX = 0.05, 0.55, 0.22, 0.8, 0.12, 0.1


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _lungs(rng: np.random.Generator) -> list[tuple[float, ...]]:
    """(cy, cx, ry, rx) of the image-left and image-right lung, in units of the image size."""
    cy = 0.45 + rng.normal(0, 0.015)
    return [(cy, 0.5 + side * rng.uniform(0.17, 0.2), rng.uniform(0.27, 0.31), rng.uniform(0.11, 0.14))
            for side in (-1, 1)]


def _ribs(yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bright arcs that sag towards the sides, as the posterior ribs do on a PA film."""
    ribs = np.zeros(yy.shape, bool)
    for top in np.arange(0.18, 0.75, rng.uniform(0.075, 0.09)):
        arc = top + 1.2 * (xx - 0.5) ** 2
        ribs |= np.abs(yy - arc) < 0.012
    return ribs


def crescent(yy: np.ndarray, xx: np.ndarray, lung: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """A thin pneumothorax along the lateral/apical pleura: the lung minus its shrunk, medial copy."""
    cy, cx, ry, rx = lung
    side = 1.0 if cx > 0.5 else -1.0
    depth = max(rng.uniform(0.015, 0.04), 3.0 / yy.shape[0])
    collapsed = _ellipse(yy, xx, cy + depth, cx - side * depth, ry - depth, rx - depth)
    upper = yy < cy + rng.uniform(0.0, 0.15)
    return _ellipse(yy, xx, cy, cx, ry, rx) & ~collapsed & upper


def chest_xray(size: int, rng: np.random.Generator, positive: bool) -> tuple[np.ndarray, np.ndarray]:
    """One (size, size) uint16 MONOCHROME2 radiograph and its pneumothorax mask."""
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    image = np.full((size, size), AIR, np.float32)
    body = _ellipse(yy, xx, 0.58, 0.5, rng.uniform(0.5, 0.56), rng.uniform(0.4, 0.46))
    image[body] = SOFT
    lungs = _lungs(rng)
    lung_area = np.zeros_like(body)
    for lung in lungs:
        lung_area |= _ellipse(yy, xx, *lung)
    image[lung_area] = LUNG + rng.normal(0, 0.01)
    mediastinum = (np.abs(xx - 0.5) < 0.05) | _ellipse(yy, xx, 0.62, 0.55, 0.12, 0.1)
    image[mediastinum & body] = MEDIASTINUM
    mask = np.zeros((size, size), bool)
    if positive:
        mask = crescent(yy, xx, lungs[int(rng.integers(2))], rng)
        image[mask] = PTX + 0.02 * float(rng.random())  # air without lung markings: darker than lung
    image[_ribs(yy, xx, rng) & body] += RIB
    gain, gamma = rng.uniform(0.8, 1.15), rng.uniform(0.8, 1.25)
    image = np.clip(image * gain + rng.normal(0, 0.02, image.shape), 0.0, 1.0) ** gamma
    return np.round(image * (2**BITS - 1)).astype(np.uint16), mask


def _dataset(pixels: np.ndarray, uids: dict[str, str], patient: int, size: int) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uids["sop"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, uids["sop"]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], uids["series"]
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    ds.PatientName = f"PHANTOM^PATIENT^{patient}"
    ds.PatientID = f"PHANTOM-PID-{patient:05d}"
    ds.PatientBirthDate = f"19{10 + patient % 80:02d}0{1 + patient % 9}1{patient % 10}"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [round(0.168 * 1024 / size, 4)] * 2
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, BITS, BITS - 1, 0
    ds.PixelData = pixels.tobytes()
    return ds


def _rows(mask: np.ndarray, split: bool) -> list[str]:
    """The image's RLE rows: -1, one row, or the mask's pixels split in two halves over two rows."""
    if not mask.any():
        return [" -1"]
    if not split:
        return [" " + rle_encode(mask)]
    flat = np.flatnonzero(mask.ravel())
    first = np.zeros(mask.size, bool)
    first[flat[: len(flat) // 2]] = True
    first = first.reshape(mask.shape)
    return [" " + rle_encode(first), " " + rle_encode(mask & ~first)]


def write(root: Path, cases: int, depth: int, size: int, seed: int) -> None:
    """Write `cases` radiographs and train-rle.csv under `root`; `depth` is unused (2D images)."""
    rng = np.random.default_rng(seed)
    positives = set(rng.permutation(cases)[: max(int(round(cases * POSITIVE_FRACTION)), min(cases, 1))].tolist())
    lines = [HEADER]
    for i in range(cases):
        uids = {kind: generate_uid(entropy_srcs=[str(seed), str(i), kind]) for kind in ("study", "series", "sop")}
        pixels, mask = chest_xray(size, rng, i in positives)
        folder = root / "dicom-images-train" / uids["study"] / uids["series"]
        folder.mkdir(parents=True, exist_ok=True)
        patient = i - 1 if i % 5 == 1 else i
        _dataset(pixels, uids, patient, size).save_as(folder / f"{uids['sop']}.dcm", enforce_file_format=True)
        split = i in positives and sorted(positives).index(i) % 3 == 1
        lines += [f"{uids['sop']},{rle}" for rle in _rows(mask, split)]
    (root / "train-rle.csv").write_text("\n".join(lines) + "\n")
