"""Medical Segmentation Decathlon layout, any task: imagesTr/*.nii.gz, labelsTr/*.nii.gz, dataset.json.

A multi-modal task's 4D images (BraTS: FLAIR, T1w, T1gd, T2w) become image channels; CT or MR
intensity handling follows dataset.json's modality (medseg.preprocess). Which label values form
the foreground is `dataset.labels`; without it a label must be 0/1, since thresholding a
multi-label volume at > 0 would make that choice silently.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from medseg.classes import BINARY, Classes
from medseg.datasets import CaseRef, ReaderConfig, Slice
from medseg.image_files import NIFTI_SUFFIXES, check_same_grid, label_values, read_nifti
from medseg.errors import MedsegError
from medseg.preprocess import nifti_volume, upright, volume_slice

CHANNELS = 1  # of a single-modality task; convert records the channels a task's images have
EXPECTED: dict[str, int] = {}  # any task: its dataset.json's numTraining is checked instead

log = logging.getLogger(__name__)


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
    _warn_on_count(root / "dataset.json", len(cases))
    return cases


def _warn_on_count(meta_file: Path, found: int) -> None:
    """Say so when imagesTr/ holds another number of cases than dataset.json's numTraining."""
    try:
        expected = json.loads(meta_file.read_text()).get("numTraining")
    except (OSError, ValueError, AttributeError):
        return  # no or unreadable dataset.json: modality() reports a broken one when it matters
    if isinstance(expected, int) and expected != found:
        log.warning("%s: numTraining is %d but imagesTr/ holds %d labelled cases (partial download?)",
                    meta_file, expected, found)


def _listed(label: np.ndarray) -> str:
    return ", ".join(f"{v:g}" for v in np.unique(label)[:12].tolist())


def foreground(path: Path, label: np.ndarray, labels: list[int] | None, classes: Classes = BINARY) -> np.ndarray:
    """The voxels whose value is in `labels`; without `labels` the volume must be binary (0/1).
    With several classes, their uint8 codes (medseg.classes)."""
    bad = int((~np.isfinite(label)).sum())
    if bad:
        raise MedsegError(f"{path}: {bad} label voxels are NaN or inf; a label holds class numbers")
    if labels is None and not classes.multi:
        if ((label != 0) & (label != 1)).any():
            example = [int(v) for v in np.unique(label) if v > 0 and v == int(v)][:4]
            raise MedsegError(f"{path}: labels {_listed(label)} found; only 0/1 labels are supported without a "
                              f"label mapping: set dataset.labels to the values that form the foreground, e.g. {example}")
        return label > 0
    if (label != np.round(label)).any():
        raise MedsegError(f"{path}: label values {_listed(label)} are not all integers; dataset.labels selects "
                          "class numbers (is this a resampled or probability map?)")
    return classes.encode(label) if classes.multi else np.isin(label, labels)


def read_case(case: CaseRef, cfg: ReaderConfig) -> Iterator[Slice]:
    """The case's axial slices, CT windowed as `cfg` says and the foreground its labels or classes select.
    Image and label must lie on one voxel grid (checked on their headers before any voxel is read)."""
    check_same_grid(case.image, case.label)
    volume, zooms = nifti_volume(case.image, (cfg.window_level, cfg.window_width))
    label, _ = read_nifti(case.label)
    if volume.shape[:3] != label.shape or label.ndim != 3:
        raise MedsegError(f"{case.label}: shape {label.shape} differs from its image {case.image} {volume.shape}")
    mask = foreground(case.label, label, cfg.labels, cfg.classes)
    spacing = (zooms[1], zooms[0], zooms[2])
    values = label_values(label)
    for k in range(volume.shape[2]):
        yield Slice(index=k, image=volume_slice(volume, k), mask=np.ascontiguousarray(upright(mask[:, :, k])),
                    spacing=spacing, label_values=values)
