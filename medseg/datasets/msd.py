"""Medical Segmentation Decathlon layout: imagesTr/*.nii.gz, labelsTr/*.nii.gz, dataset.json."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medseg.datasets import CaseRef, Slice
from medseg.errors import MedsegError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
CHANNELS = 1
EXPECTED = {"cases": 63}  # MSD Task06_Lung training cases


def count_summary(cases: list[CaseRef]) -> dict[str, int]:
    return {"cases": len(cases)}


def _case_id(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def find_root(raw: Path) -> Path:
    """The folder holding imagesTr/ (raw itself or one level down, e.g. Task06_Lung/)."""
    candidates = [raw] + sorted(p for p in raw.iterdir() if p.is_dir())
    for folder in candidates:
        if (folder / "imagesTr").is_dir():
            return folder
    raise MedsegError(f"{raw}: no imagesTr/ folder found (expected the Decathlon layout)")


def list_cases(raw: Path) -> list[CaseRef]:
    root = find_root(raw)
    cases = []
    for image in sorted((root / "imagesTr").iterdir()):
        if image.name.startswith(".") or not image.name.endswith(NIFTI_SUFFIXES):
            continue  # macOS ._ files and other clutter
        label = root / "labelsTr" / image.name
        if not label.exists():
            raise MedsegError(f"{image}: no label file {label}")
        cid = _case_id(image)
        cases.append(CaseRef(case_id=cid, group=cid, image=image, label=label))
    if not cases:
        raise MedsegError(f"{root / 'imagesTr'}: no NIfTI images found")
    return cases


def modality(image: Path, volume: np.ndarray) -> str:
    """'CT' or 'MR' from dataset.json beside imagesTr/; without one, CT when air reads as HU."""
    meta_file = image.parent.parent / "dataset.json"
    if meta_file.exists():
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError) as err:
            raise MedsegError(f"{meta_file}: not valid JSON ({err})") from err
        found = meta.get("modality") or meta.get("channel_names") or {}
        if found:
            return "CT" if str(next(iter(found.values()))).upper() == "CT" else "MR"
    return "CT" if np.percentile(volume, 1) < -500 else "MR"


def load_canonical(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as err:  # nibabel raises many types for broken files
        raise MedsegError(f"{path}: cannot read NIfTI ({type(err).__name__}: {err})".splitlines()[0]) from err
    return data, tuple(float(z) for z in img.header.get_zooms()[:3])


def normalise(volume: np.ndarray, kind: str, cfg: dict[str, Any]) -> np.ndarray:
    """CT: the params window; MR: 0.5-99.5 percentile of the non-zero voxels. Result in [0, 1]."""
    if kind == "CT":
        low = cfg["window_level"] - cfg["window_width"] / 2
        out = (volume - low) / cfg["window_width"]
    else:
        body = volume[volume != 0]
        lo, hi = np.percentile(body, [0.5, 99.5]) if body.size else (0.0, 1.0)
        out = (volume - lo) / max(hi - lo, 1e-6)
    return np.clip(out, 0.0, 1.0)


def upright(volume_slice: np.ndarray) -> np.ndarray:
    """RAS (x, y) slice -> display rows (anterior at top) and columns (patient right on the left)."""
    return volume_slice.T[::-1, ::-1]


def check_binary_label(path: Path, label: np.ndarray) -> None:
    """Refuse a multi-label volume (BraTS 0..4, organ + tumour): which labels make the foreground
    is a choice, and thresholding at > 0 would make it silently."""
    if ((label != 0) & (label != 1)).any():
        found = ", ".join(f"{v:g}" for v in np.unique(label)[:12].tolist())
        raise MedsegError(f"{path}: labels {found} found; only 0/1 labels are supported "
                          "(a label mapping is not supported yet)")


def read_case(case: CaseRef, cfg: dict[str, Any]) -> Iterator[Slice]:
    volume, zooms = load_canonical(case.image)
    label, _ = load_canonical(case.label)
    if volume.ndim == 4:
        volume = volume[..., 0]  # first modality
    if volume.shape[:3] != label.shape[:3]:
        raise MedsegError(f"{case.label}: shape {label.shape} differs from image {volume.shape}")
    check_binary_label(case.label, label)
    volume = normalise(volume, modality(case.image, volume), cfg)
    spacing = (zooms[1], zooms[0], zooms[2])
    for k in range(volume.shape[2]):
        image = np.ascontiguousarray(upright(volume[:, :, k]))[..., None]
        mask = np.ascontiguousarray(upright(label[:, :, k] > 0))
        yield Slice(index=k, image=image, mask=mask, spacing=spacing)
