"""Medical Segmentation Decathlon layout: imagesTr/*.nii.gz, labelsTr/*.nii.gz, dataset.json."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medseg.datasets import CaseRef, Slice
from medseg.datasets.files import NIFTI_SUFFIXES, read_nifti
from medseg.errors import MedsegError
from medseg.preprocess import nifti_volume, upright, volume_slice

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


def check_binary_label(path: Path, label: np.ndarray) -> None:
    """Refuse a multi-label volume (BraTS 0..4, organ + tumour): which labels make the foreground
    is a choice, and thresholding at > 0 would make it silently."""
    if ((label != 0) & (label != 1)).any():
        found = ", ".join(f"{v:g}" for v in np.unique(label)[:12].tolist())
        raise MedsegError(f"{path}: labels {found} found; only 0/1 labels are supported "
                          "(a label mapping is not supported yet)")


def read_case(case: CaseRef, cfg: dict[str, Any]) -> Iterator[Slice]:
    volume, zooms = nifti_volume(case.image, cfg)
    label, _ = read_nifti(case.label)
    if volume.shape[:3] != label.shape[:3]:
        raise MedsegError(f"{case.label}: shape {label.shape} differs from image {volume.shape}")
    check_binary_label(case.label, label)
    spacing = (zooms[1], zooms[0], zooms[2])
    for k in range(volume.shape[2]):
        mask = np.ascontiguousarray(upright(label[:, :, k] > 0))
        yield Slice(index=k, image=volume_slice(volume, k), mask=mask, spacing=spacing)
