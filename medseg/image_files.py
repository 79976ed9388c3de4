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

from medseg.errors import MedsegError, cannot

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
    rather than thresholded, since no threshold is right for all of them. A colour mask counts a
    pixel where any colour channel is set (a red lesion on black is a lesion, whichever channel
    opencv stores first); an alpha channel must be opaque everywhere, or the file is refused."""
    array = _mask_pixels(path, shape)
    values = np.unique(array)  # over every colour channel: each must hold mask values only
    if not set(values.tolist()) <= MASK_VALUES:
        raise MedsegError(f"{path}: mask values {_listed(values)} are not binary (expected 0/255 or 0/1)")
    return array > 0 if array.ndim == 2 else (array > 0).any(axis=2)


def _mask_pixels(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A mask file's stored pixels, alpha dropped (it must be opaque everywhere), of the image's size."""
    array = read_image(path)
    if array.ndim == 3 and array.shape[2] == 4:
        if (array[..., 3] != array[..., 3].max()).any():
            raise MedsegError(f"{path}: mask has a varying alpha channel (transparency); save it as a grey "
                              "0/255 image")
        array = array[..., :3]
    if array.shape[:2] != shape:
        raise MedsegError(f"{path}: mask size {array.shape[:2]} differs from image size {shape}")
    return array


MAX_LABELS = 64  # distinct values a label map may hold; more is an anti-aliased or resampled mask


def read_label_map(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A mask file as (H, W) integer labels: a label map's stored values (a binary mask is the map
    {0, 255} or {0, 1}). A colour mask is read as binary (255 where any channel is set) when it holds
    0/1/255 only, as its one channel when all three agree; an anti-aliased or float mask is refused."""
    array = _mask_pixels(path, shape)
    if not np.issubdtype(array.dtype, np.integer):
        raise MedsegError(f"{path}: mask pixels are {array.dtype}; expected integer labels (8- or 16-bit)")
    if array.ndim == 3:
        if (array == array[..., :1]).all():
            array = array[..., 0]
        elif set(np.unique(array).tolist()) <= MASK_VALUES:
            array = np.where((array > 0).any(axis=2), 255, 0).astype(np.uint8)
        else:
            raise MedsegError(f"{path}: colour mask with values {_listed(np.unique(array))}; save a label map as a "
                              "one-channel image (0 background, 1, 2, ... one value per class)")
    values = np.unique(array)
    if len(values) > MAX_LABELS:
        raise MedsegError(f"{path}: mask holds {len(values)} distinct values ({_listed(values)}); expected a binary "
                          f"mask or a label map of at most {MAX_LABELS} values (an anti-aliased or resized mask?)")
    return array


def label_values(label: np.ndarray) -> tuple[int, ...]:
    """The non-zero values a label volume or map holds, as ints."""
    return tuple(int(v) for v in np.unique(label) if v != 0)


def _listed(values: np.ndarray, most: int = 8) -> str:
    """'0, 3, 255' or '0, 1, 2, ... (300 distinct)' for a message."""
    shown = ", ".join(str(v) for v in values[:most].tolist())
    return shown if len(values) <= most else f"{shown}, ... ({len(values)} distinct)"


def load_nifti(path: Path) -> nib.spatialimages.SpatialImage:
    """The NIfTI's header and lazy voxels; a broken or fake file (a PNG named .nii.gz) is one line."""
    try:
        return nib.load(str(path))
    except Exception as err:  # nibabel raises many types for broken files
        raise cannot(path, "read NIfTI", err) from err


def require_volume(path: Path, img: nib.spatialimages.SpatialImage) -> nib.spatialimages.SpatialImage:
    """`img` when it has three axes at least (a 2D NIfTI cannot be sliced along z)."""
    if len(img.shape) < 3:
        raise MedsegError(f"{path}: expected a 3D volume (or 4D, modalities last), got shape {img.shape}")
    return img


def read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """The voxels in the closest canonical (RAS) orientation as float32, and the voxel size (mm).
    Trailing axes of length 1 beyond the third (a label saved as X x Y x Z x 1) are dropped; what
    is left must be a volume, 3D or 4D (modalities last)."""
    img = require_volume(path, load_nifti(path))
    try:
        img = nib.as_closest_canonical(img)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as err:  # truncated data, bad scaling: many types
        raise cannot(path, "read NIfTI", err) from err
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 4:
        raise MedsegError(f"{path}: expected a 3D volume (or 4D, modalities last), got shape {img.shape}")
    return data, tuple(float(z) for z in img.header.get_zooms()[:3])


def _canonical_grid(img: nib.spatialimages.SpatialImage) -> tuple[tuple[int, ...], np.ndarray]:
    """(shape, affine) of the first three axes after nibabel's closest-canonical reorientation,
    computed from the header alone (as_closest_canonical computes it so, then moves the voxels)."""
    shape, affine = img.shape[:3], img.affine
    ornt = nib.orientations.io_orientation(affine)
    canonical = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    return tuple(shape[int(axis)] for axis in ornt[:, 0]), canonical


def _axcodes(affine: np.ndarray) -> str:
    return "".join(nib.aff2axcodes(affine))


GRID_TOLERANCE = 0.1  # of the smallest voxel side: how far apart a label voxel and its image voxel may lie


def check_same_grid(image: Path, label: Path) -> None:
    """Refuse, naming both files, a label whose voxels do not lie on the image's: another shape,
    orientation, voxel size or origin, after each is brought to the canonical orientation the
    reader slices in. The test: every corner of the volume lands within GRID_TOLERANCE of a voxel
    of the same point in both (so float noise in a header passes, a flip or a shift does not)."""
    img, lab = require_volume(image, load_nifti(image)), require_volume(label, load_nifti(label))
    shape_img, aff_img = _canonical_grid(img)
    shape_lab, aff_lab = _canonical_grid(lab)
    if shape_lab != shape_img or any(n != 1 for n in lab.shape[3:]):  # X x Y x Z x 1 is squeezed when read
        raise MedsegError(f"{label}: shape {lab.shape} differs from its image {image} {img.shape}; "
                          "a label is one volume of the image's size")
    corners = np.array([[i, j, k, 1] for i in (0, shape_img[0] - 1) for j in (0, shape_img[1] - 1)
                        for k in (0, shape_img[2] - 1)], float).T
    apart = float(np.abs((aff_img @ corners - aff_lab @ corners)[:3]).max())
    sides_img, sides_lab = (np.sqrt((a[:3, :3] ** 2).sum(axis=0)) for a in (aff_img, aff_lab))
    if apart <= GRID_TOLERANCE * float(sides_img.min()):
        return
    if _axcodes(img.affine) != _axcodes(lab.affine):
        why = f"orientation {_axcodes(lab.affine)} differs from its image's {_axcodes(img.affine)}"
    elif not np.allclose(sides_lab, sides_img, rtol=1e-3):
        why = f"voxel size {_mm(sides_lab)} mm differs from its image's {_mm(sides_img)} mm"
    else:
        why = f"affine places voxels up to {apart:.3g} mm from its image's (origin {_mm(lab.affine[:3, 3])} vs {_mm(img.affine[:3, 3])})"
    raise MedsegError(f"{label}: {why} ({image}); image and label must share one voxel grid")


def _mm(values: np.ndarray) -> str:
    return " x ".join(f"{v:g}" for v in np.round(values, 4))


def read_dicom(path: Path) -> tuple[pydicom.Dataset, np.ndarray]:
    """Header and pixels of a one-frame grayscale DICOM."""
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as err:  # truncated files, unsupported compression, broken headers
        raise cannot(path, "read DICOM", err) from err
    if pixels.ndim != 2:
        raise MedsegError(f"{path}: expected one grayscale frame, got pixel array of shape {pixels.shape}")
    return ds, pixels
