"""Apply a trained checkpoint to new files, returning masks in each source's own geometry."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import nibabel as nib
import numpy as np
import torch

from medseg.datasets.files import is_clutter, read_image
from medseg.datasets.msd import NIFTI_SUFFIXES, load_canonical, modality, normalise, upright
from medseg.datasets.siim import read_dicom, to_unit_range
from medseg.errors import MedsegError
from medseg.inference import predict_probs

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")


def kind_of(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    return None


def list_sources(source: Path) -> list[Path]:
    """The file itself, or the readable files of a folder (recursively, clutter skipped)."""
    if source.is_file():
        if kind_of(source) is None:
            raise MedsegError(f"{source}: unsupported file type (use PNG/JPG/TIF, DICOM or NIfTI)")
        return [source]
    if not source.is_dir():
        raise MedsegError(f"{source}: no such file or folder")
    found = sorted(p for p in source.rglob("*") if p.is_file() and kind_of(p) and not
                   any(is_clutter(part) for part in p.relative_to(source).parts))
    if not found:
        raise MedsegError(f"{source}: no PNG/JPG/TIF, DICOM or NIfTI files found")
    return found


def _unit_image(path: Path) -> np.ndarray:
    """A 2D file as (H, W, C) float in [0, 1], colour in RGB (file) order."""
    array = read_image(path)
    if array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
    if array.ndim == 3:
        array = np.ascontiguousarray(array[..., ::-1])
    scale = 255.0 if array.dtype == np.uint8 else float(max(array.max(), 1))
    image = array.astype(np.float32) / scale
    return image if image.ndim == 3 else image[..., None]


def _match_channels(image: np.ndarray, channels: int) -> np.ndarray:
    if image.shape[2] == channels:
        return image
    if channels == 1:
        return image.mean(axis=2, keepdims=True)
    return np.repeat(image[..., :1], channels, axis=2)


def _to_model_input(images: list[np.ndarray], size: int, channels: int) -> np.ndarray:
    """Resize like `convert` did (area averaging) and quantise to the uint8 the model saw."""
    batch = []
    for image in images:
        resized = cv2.resize(_match_channels(image, channels), (size, size), interpolation=cv2.INTER_AREA)
        resized = resized.reshape(size, size, channels)
        batch.append(np.clip(np.round(resized * 255), 0, 255).astype(np.uint8))
    return np.stack(batch)


def _probs_at(model: torch.nn.Module, images: list[np.ndarray], pre: dict[str, Any], device: torch.device,
              tta: bool) -> list[np.ndarray]:
    probs = predict_probs(model, _to_model_input(images, pre["size"], pre["channels"]), device, tta=tta)
    return [cv2.resize(p, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
            for p, img in zip(probs, images)]


def predict_2d(path: Path, model, pre, device, threshold: float, tta: bool) -> tuple[np.ndarray, np.ndarray]:
    """(image in [0, 1], bool mask at the file's own height x width) of a 2D image or DICOM."""
    if kind_of(path) == "dicom":
        ds, pixels = read_dicom(path)
        image = to_unit_range(ds, pixels)[..., None]
    else:
        image = _unit_image(path)
    prob = _probs_at(model, [image], pre, device, tta)[0]
    return image, prob >= threshold


def predict_nifti(path: Path, model, pre, device, threshold: float, tta: bool) -> nib.Nifti1Image:
    """A uint8 label volume with the input's shape and affine, slices predicted upright as trained."""
    original = nib.load(str(path))
    volume, _ = load_canonical(path)
    if volume.ndim == 4:
        volume = volume[..., 0]
    volume = normalise(volume, modality(path, volume), pre)
    slices = [np.ascontiguousarray(upright(volume[:, :, k]))[..., None] for k in range(volume.shape[2])]
    probs = _probs_at(model, slices, pre, device, tta)
    mask_ras = np.stack([upright(p >= threshold) for p in probs], axis=2)  # upright is its own inverse
    to_original = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "A", "S")), nib.orientations.io_orientation(original.affine))
    mask = nib.orientations.apply_orientation(mask_ras, to_original).astype(np.uint8)
    if mask.shape != original.shape[:3]:
        raise MedsegError(f"{path}: internal orientation error ({mask.shape} vs {original.shape})")
    out = nib.Nifti1Image(mask, original.affine, original.header)
    out.set_data_dtype(np.uint8)
    return out
