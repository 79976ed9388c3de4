"""The one path from a source file's pixels to the uint8 slice a model sees, shared by `convert`
(which stores it) and `predict` (which feeds it to a model), so the two cannot drift apart.

Hand-written: the steps are a few opencv/numpy calls, but which ones and in which order is the
product's definition of its input (and must stay bit-identical between the two stages).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pydicom

from medseg.image_files import read_dicom, read_image, read_nifti
from medseg.errors import MedsegError

log = logging.getLogger(__name__)


def finite_mask(array: np.ndarray) -> np.ndarray | None:
    """Where `array` is finite, or None when it is everywhere (the usual case: nothing to mask)."""
    if array.dtype.kind != "f":
        return None
    finite = np.isfinite(array)
    return None if finite.all() else finite


def check_finite(path: Path, array: np.ndarray) -> None:
    """NaN or inf pixels are read as background (0 after normalisation), said once; none finite is an error."""
    finite = finite_mask(array)
    if finite is None:
        return
    if not finite.any():
        raise MedsegError(f"{path}: no finite pixel value (all {finite.size} are NaN or inf)")
    log.warning("%s: %d of %d voxels/pixels are NaN or inf; read as background (0 after normalisation)",
                path, int(finite.size - finite.sum()), finite.size)


MR_PERCENTILES = (0.5, 99.5)  # an MR volume's intensity range: its outliers (vessels, noise) saturate


def mr_range(values: np.ndarray) -> tuple[float, float]:
    """The MR_PERCENTILES of the non-zero finite values (background and NaN take no part); (0, 1)
    when there are none."""
    finite = finite_mask(values)
    body = values[values != 0] if finite is None else values[finite & (values != 0)]
    return tuple(np.percentile(body, MR_PERCENTILES)) if body.size else (0.0, 1.0)


def rescale(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """`values` mapped from [lo, hi] to [0, 1] and clipped; non-finite values come out 0."""
    finite = finite_mask(values)
    out = np.clip((values - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return out if finite is None else np.where(finite, out, 0.0).astype(out.dtype)


def normalise_volume(volume: np.ndarray, kind: str, window: tuple[float, float]) -> np.ndarray:
    """CT: the `convert` window (level, width in HU); MR: `mr_range` of the volume. Result in
    [0, 1]. NaN-aware: non-finite voxels take no part in the range and come out 0, so one NaN
    voxel cannot turn a case black."""
    if kind == "CT":
        level, width = window
        return rescale(volume, level - width / 2, level + width / 2)
    return rescale(volume, *mr_range(volume))


def channel_ranges(images: list[np.ndarray]) -> list[tuple[float, float]]:
    """Per channel, `mr_range` over a case's 2D images (H, W, C): the volume its slice files form."""
    return [mr_range(np.concatenate([image[..., c].ravel() for image in images]))
            for c in range(images[0].shape[2])]


def rescale_channels(image: np.ndarray, ranges: list[tuple[float, float]]) -> np.ndarray:
    """One (H, W, C) image with each channel rescaled by its volume's range (`channel_ranges`)."""
    return np.stack([rescale(image[..., c], lo, hi) for c, (lo, hi) in enumerate(ranges)], axis=2)


def modality(image: Path, volume: np.ndarray) -> str:
    """'CT' or 'MR' from the Decathlon dataset.json beside imagesTr/; without one, CT when air
    reads as HU (1st percentile below -500)."""
    meta_file = image.parent.parent / "dataset.json"
    if meta_file.exists():
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError) as err:
            raise MedsegError(f"{meta_file}: not valid JSON ({err})") from err
        found = meta.get("modality") or meta.get("channel_names") or {}
        if found:
            return "CT" if str(next(iter(found.values()))).upper() == "CT" else "MR"
    finite = finite_mask(volume)
    return "CT" if np.percentile(volume if finite is None else volume[finite], 1) < -500 else "MR"


def upright(volume_slice: np.ndarray) -> np.ndarray:
    """RAS (x, y[, channel]) slice -> display rows (anterior at top) and columns (patient right on
    the left), channels kept last; its own inverse."""
    return np.swapaxes(volume_slice, 0, 1)[::-1, ::-1]


def nifti_volume(path: Path, window: tuple[float, float]) -> tuple[np.ndarray, tuple[float, ...]]:
    """A NIfTI image in RAS normalised to [0, 1], and its voxel size. A 4D image (a multi-modal MSD
    task, e.g. BraTS FLAIR, T1w, T1gd, T2w) keeps its modalities as a last axis, each normalised
    on its own: their intensity scales differ."""
    volume, zooms = read_nifti(path)
    check_finite(path, volume)
    kind = modality(path, volume)
    if volume.ndim == 4:
        return np.stack([normalise_volume(volume[..., c], kind, window) for c in range(volume.shape[3])], axis=3), zooms
    return normalise_volume(volume, kind, window), zooms


def volume_slice(volume: np.ndarray, k: int) -> np.ndarray:
    """Axial slice k of a RAS volume (x, y, z[, channel]), upright, as (H, W, C)."""
    plane = volume[:, :, k]
    return np.ascontiguousarray(upright(plane if plane.ndim == 3 else plane[..., None]))


def dicom_unit_range(ds: pydicom.Dataset, pixels: np.ndarray) -> np.ndarray:
    """(H, W, 1) in [0, 1], scaled by the stored bit range (min/max when the header's range does
    not hold the data); MONOCHROME1 (bright = air) is inverted so that air is always dark."""
    data = pixels.astype(np.float32)
    finite = finite_mask(data)  # float pixel data may hold NaN: left out of the range, read as 0
    values = data if finite is None else data[finite]
    bits = int(ds.get("BitsStored", 0) or 0)
    unsigned = int(ds.get("PixelRepresentation", 0) or 0) == 0
    if unsigned and 0 < bits <= 16 and values.max() <= 2**bits - 1:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(values.min()), float(values.max())
    out = np.clip((data - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    if finite is not None:
        out = np.where(finite, out, 0.0).astype(np.float32)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
        out = 1.0 - out
    return out[..., None]


def dicom_image(path: Path) -> tuple[pydicom.Dataset, np.ndarray]:
    """A one-frame DICOM's header and its (H, W, 1) image in [0, 1]."""
    ds, pixels = read_dicom(path)
    check_finite(path, pixels)
    return ds, dicom_unit_range(ds, pixels)


def unit_image(array: np.ndarray) -> np.ndarray:
    """Stored 2D pixels (opencv order: BGR/BGRA colour) -> (H, W, C) float32 in [0, 1], colour in
    RGB (the file's channel order), alpha dropped; 8-bit scaled by 255, deeper by its maximum."""
    if array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
    if array.ndim == 3:
        array = np.ascontiguousarray(array[..., ::-1])
    finite = finite_mask(array)  # a float TIFF may hold NaN: left out of the scale, read as 0
    if finite is not None:
        array = np.where(finite, array, 0)
    scale = 255.0 if array.dtype == np.uint8 else float(max(array.max(), 1))
    image = array.astype(np.float32) / scale
    return image if image.ndim == 3 else image[..., None]


def file_image(path: Path) -> np.ndarray:
    """A PNG/JPG/TIF file as unit_image does it."""
    array = read_image(path)
    check_finite(path, array)
    return unit_image(array)


def match_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, C) -> (H, W, channels): grey repeated to colour, colour averaged to grey."""
    if image.shape[2] == channels:
        return image
    if channels == 1:
        return image.mean(axis=2, keepdims=True)
    return np.repeat(image[..., :1], channels, axis=2)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def model_input(image: np.ndarray, size: int, channels: int) -> np.ndarray:
    """(H, W, C) in [0, 1] -> (size, size, channels) uint8: channels matched, area-averaged resize,
    quantised. What `convert` stores as the slice PNG and `predict` feeds the model."""
    resized = cv2.resize(match_channels(image, channels), (size, size), interpolation=cv2.INTER_AREA)
    return to_uint8(resized.reshape(size, size, channels))


def model_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """(H, W) label codes -> (size, size) uint8 codes: each code's share of every output pixel
    (area-averaged when shrinking, bilinear when enlarging), the largest share wins, ties to the lower
    code. A label is never averaged into a new value, and unlike nearest-neighbour sampling a
    boundary is not aliased: at 256 -> 96 px the nearest samples of the LGG masks agree with their
    majority labels at only 0.93 Dice. nnU-Net resamples segmentations one label at a time likewise."""
    if mask.shape == (size, size):
        return mask.astype(np.uint8)
    codes = np.unique(mask)
    if len(codes) == 1:
        return np.full((size, size), codes[0], np.uint8)
    shrink = size < max(mask.shape)
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    shares = np.stack([cv2.resize((mask == code).astype(np.float32), (size, size), interpolation=interpolation)
                       for code in codes])
    return codes[np.argmax(shares, axis=0)].astype(np.uint8)
