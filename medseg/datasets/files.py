"""File-level pieces every raw layout shares: clutter to skip, finding the dataset's folder in an
unpacked archive (which often nests it, sometimes twice), and reading the stored pixels of 2D
images, masks, DICOM and NIfTI files with one clear line for a broken file."""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pydicom

from medseg.errors import MedsegError

log = logging.getLogger(__name__)

CLUTTER_NAMES = {"__MACOSX", ".keepkaggle", ".DS_Store"}
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
MASK_VALUES = {0, 1, 255}
NIFTI_SUFFIXES = (".nii.gz", ".nii")
JPEG_TAIL = 1024  # the end marker must sit in the last bytes (tolerates a little trailing padding)


def is_clutter(name: str) -> bool:
    """macOS resource forks (._x), __MACOSX folders and Kaggle's .keepkaggle markers."""
    return name in CLUTTER_NAMES or name.startswith("._")


def subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_clutter(p.name))


def find_shallowest(raw: Path, matches: Callable[[Path], bool], max_depth: int, what: str,
                    prune: Callable[[Path], bool] = lambda p: False) -> Path:
    """The shallowest folder under `raw` (raw included) that `matches`, not descending into
    folders that `prune` names; deeper duplicate copies that Kaggle archives carry are ignored.
    The error says "no <what>"."""
    level = [raw]
    for _ in range(max_depth + 1):
        found = [p for p in level if matches(p)]
        if found:
            if len(found) > 1:
                log.warning("%s: %d copies of the dataset at the same depth; using %s", raw, len(found), found[0])
            return found[0]
        level = [sub for folder in level for sub in subfolders(folder) if not prune(sub)]
    raise MedsegError(f"{raw}: no {what}")


def _check_jpeg_complete(path: Path) -> None:
    """opencv decodes a cut-short JPEG without failing (grey fill), so check the end marker by hand."""
    with path.open("rb") as handle:
        head = handle.read(2)
        handle.seek(0, 2)
        handle.seek(max(handle.tell() - JPEG_TAIL, 0))
        tail = handle.read()
    if head == JPEG_START and JPEG_END not in tail:
        raise MedsegError(f"{path}: cannot read image (truncated JPEG: no end-of-image marker)")


def read_image(path: Path) -> np.ndarray:
    """The stored pixels (IMREAD_UNCHANGED: no EXIF rotation, so masks stay aligned); BGR for colour."""
    if path.suffix.lower() in (".jpg", ".jpeg"):
        _check_jpeg_complete(path)
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise MedsegError(f"{path}: cannot read image (missing, truncated or not an image)")
    return array


def read_binary_mask(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A 0/255 (or 0/1) mask file as bool (nonzero), which must have the image's height and width.

    Any other value (a grey edge from resampling, a multi-class label, a 16-bit mask) is refused
    rather than thresholded, since no threshold is right for all of them."""
    array = read_image(path)
    if array.ndim == 3:
        array = array[..., 0]
    if array.shape != shape:
        raise MedsegError(f"{path}: mask size {array.shape} differs from image size {shape}")
    values = np.unique(array)
    if not set(values.tolist()) <= MASK_VALUES:
        raise MedsegError(f"{path}: mask values {_listed(values)} are not binary (expected 0/255 or 0/1)")
    return array > 0


def _listed(values: np.ndarray, most: int = 8) -> str:
    """'0, 3, 255' or '0, 1, 2, ... (300 distinct)' for a message."""
    shown = ", ".join(str(v) for v in values[:most].tolist())
    return shown if len(values) <= most else f"{shown}, ... ({len(values)} distinct)"


def read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """The voxels in the closest canonical (RAS) orientation as float32, and the voxel size (mm)."""
    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as err:  # nibabel raises many types for broken files
        raise MedsegError(f"{path}: cannot read NIfTI ({type(err).__name__}: {err})".splitlines()[0]) from err
    return data, tuple(float(z) for z in img.header.get_zooms()[:3])


def read_dicom(path: Path) -> tuple[pydicom.Dataset, np.ndarray]:
    """Header and pixels of a one-frame grayscale DICOM."""
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as err:  # truncated files, unsupported compression, broken headers
        raise MedsegError(f"{path}: cannot read DICOM ({type(err).__name__}: {err})".splitlines()[0]) from err
    if pixels.ndim != 2:
        raise MedsegError(f"{path}: expected one grayscale frame, got pixel array of shape {pixels.shape}")
    return ds, pixels
