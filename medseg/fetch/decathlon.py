"""Turning the Kaggle lung mirror into the Medical Segmentation Decathlon layout the readers expect.

Why this module exists: the mirror ships TaskNNN_*/CT/*.nii volumes with GroundTruth/*.pkl(.gz)
labels, while the .msd reader reads imagesTr/labelsTr/*.nii.gz and dataset.json. The conversion
runs once, at download time, so data/raw/<name>/ holds a layout every later stage can read; the
labels are read through the restricted unpickler (medseg.fetch.pickles), never with plain pickle.
"""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medseg.datasets.registry import DATASETS
from medseg.errors import MedsegError, cannot
from medseg.fetch.archives import ARCHIVE_DIR
from medseg.fetch.kaggle_api import KAGGLE_SLUGS
from medseg.fetch.pickles import label_array, load_array_pickle
from medseg.outputs import write_json

log = logging.getLogger("medseg.fetch")

DECATHLON_DIRS = {"lung": "Task06_Lung"}
DECATHLON_READERS = ("medseg.datasets.msd", "medseg.datasets.lung")  # the readers of imagesTr/labelsTr


def convert_task_layout(name: str, target: Path) -> None:
    """TaskNNN_*/CT/*.nii + GroundTruth/*.pkl(.gz) (the Kaggle lung mirror) -> imagesTr/labelsTr."""
    if (DATASETS[name].reader if name in DATASETS else "") not in DECATHLON_READERS or _has_decathlon_root(target):
        return
    tasks = _task_folders(target)
    if not tasks:
        return
    task = _pick_task(name, tasks, target)
    out = target / DECATHLON_DIRS.get(name, f"{task.name}_decathlon")
    pairs = _pair_cases(task)
    for case, (image, label) in sorted(pairs.items()):
        _write_case(image, label, out / "imagesTr" / f"{case}.nii.gz", out / "labelsTr" / f"{case}.nii.gz")
    write_json(out / "dataset.json", _dataset_json(task, sorted(pairs)))
    log.info("converted %d cases of %s to the Decathlon layout in %s", len(pairs), task.name, out.name)


def _has_decathlon_root(target: Path) -> bool:
    return any((d / "imagesTr").is_dir() for d in [target, *target.iterdir()] if d.is_dir())


def _task_folders(target: Path) -> list[Path]:
    found = []
    for pattern in ("Task*", "*/Task*", "*/*/Task*"):
        found += [p for p in target.glob(pattern) if p.is_dir() and ARCHIVE_DIR not in p.relative_to(target).parts]
    return sorted(p for p in found if (p / "CT").is_dir() and (p / "GroundTruth").is_dir())


def _pick_task(name: str, tasks: list[Path], target: Path) -> Path:
    matching = [t for t in tasks if name.lower() in t.name.lower()]
    if len(matching) == 1 or len(tasks) == 1:
        return (matching or tasks)[0]
    listed = ", ".join(str(t.relative_to(target)) for t in tasks)
    raise MedsegError(f"{target}: cannot tell which task folder holds dataset {name!r} (found {listed})")


def _case_files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and path.name.endswith(suffixes):
            files[_stem(path.name, suffixes)] = path
    return files


def _stem(filename: str, suffixes: tuple[str, ...]) -> str:
    for suffix in sorted(suffixes, key=len, reverse=True):
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def _pair_cases(task: Path) -> dict[str, tuple[Path, Path]]:
    images = _case_files(task / "CT", (".nii", ".nii.gz"))
    labels = _case_files(task / "GroundTruth", (".pkl", ".pkl.gz", ".nii", ".nii.gz"))
    unpaired = sorted(set(images) ^ set(labels))
    if unpaired:
        log.warning(
            "%s: %d cases have only an image or only a label, skipped: %s",
            task.name, len(unpaired), ", ".join(unpaired[:10]),
        )
    pairs = {case: (images[case], labels[case]) for case in set(images) & set(labels)}
    if not pairs:
        raise MedsegError(f"{task}: no CT/*.nii volume pairs with a GroundTruth/*.pkl(.gz) label by file name")
    return pairs


def _load_nifti(path: Path) -> Any:
    try:
        return nib.load(str(path))
    except Exception as err:  # nibabel raises many types for broken files
        raise cannot(path, "read NIfTI", err) from err


def _read_label(path: Path) -> np.ndarray:
    if path.name.endswith((".nii", ".nii.gz")):
        return np.asarray(_load_nifti(path).dataobj)
    return np.asarray(label_array(load_array_pickle(path), path))


def _write_case(image: Path, label: Path, image_out: Path, label_out: Path) -> None:
    img = _load_nifti(image)
    mask = _read_label(label)
    if mask.shape != img.shape[:3]:
        raise MedsegError(f"{label}: label shape {mask.shape} differs from image {image} shape {img.shape}")
    image_out.parent.mkdir(parents=True, exist_ok=True)
    label_out.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(image_out))
    nib.save(_label_image(mask, img), str(label_out))


def _label_image(mask: np.ndarray, img: Any) -> nib.Nifti1Image:
    """The label saved with the image's affine, as the smallest integer type that holds it."""
    values = mask.astype(np.int64) if mask.dtype == bool else mask
    small = values.size == 0 or (values.min() >= 0 and values.max() <= 255)
    out = nib.Nifti1Image(np.asarray(values, dtype=np.uint8 if small else np.int16), img.affine)
    out.set_qform(img.affine, int(img.header["qform_code"]) or 1)
    out.set_sform(img.affine, int(img.header["sform_code"]) or 1)
    return out


def _dataset_json(task: Path, cases: list[str]) -> dict[str, Any]:
    labels = {"0": "background", "1": "foreground"}
    with contextlib.suppress(OSError, ValueError, AttributeError, KeyError, TypeError):
        labels = {str(k): str(v) for k, v in json.loads((task / "metadata.json").read_text())["labels"].items()}
    return {
        "name": task.name,
        "description": f"converted from {task.name}/CT and GroundTruth (Kaggle {KAGGLE_SLUGS['lung']})",
        "modality": {"0": "CT"},
        "labels": labels,
        "numTraining": len(cases),
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases],
    }
