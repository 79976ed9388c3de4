"""Apply a trained model to new files, returning masks in each source's own geometry.

torch is imported only when the model is a checkpoint: an ONNX export runs with onnxruntime alone.
"""
from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import nibabel as nib
import numpy as np

from medseg.image_files import NIFTI_SUFFIXES, is_clutter, load_nifti
from medseg import paths
from medseg.classes import BINARY, Classes
from medseg.errors import MedsegError
from medseg.onnx_runtime import OnnxModel, is_export
from medseg.scored_post import RECORD, apply_slices, check_belongs, checkpoint_digests, read_record, step_names
from medseg.preprocess import (channel_ranges, dicom_image, file_image, model_input, nifti_volume, rescale_channels,
                               upright, volume_slice)

log = logging.getLogger("medseg.predict")
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


def list_sources(source: Path, skip: Path | None = None) -> list[Path]:
    """The file itself, or the readable files of a folder (recursively, clutter skipped, and the
    files under `skip`: predict's own --out, when it lies inside the source folder)."""
    if source.is_file():
        if kind_of(source) is None:
            raise MedsegError(f"{source}: unsupported file type (use PNG/JPG/TIF, DICOM or NIfTI)")
        return [source]
    if not source.is_dir():
        raise MedsegError(f"{source}: no such file or folder")
    skipped = skip.resolve() if skip is not None else None
    if skipped is not None and source.resolve().is_relative_to(skipped):
        raise MedsegError(f"--out {skip}: is the --source folder {source} (or holds it); the masks would land among "
                          "the images and be read as images by the next run: give another folder")
    found = sorted(p for p in source.rglob("*") if p.is_file() and kind_of(p) and not
                   any(is_clutter(part) for part in p.relative_to(source).parts)
                   and not (skipped is not None and p.resolve().is_relative_to(skipped)))
    if not found:
        raise MedsegError(f"{source}: no PNG/JPG/TIF, DICOM or NIfTI files found")
    return found


def mask_name(path: Path, keep_extension: bool = False) -> str:
    """The mask's file name: a NIfTI's case name + _mask and its own extension (case.nii.gz ->
    case_mask.nii.gz, case.nii -> case_mask.nii); any other file's stem + _mask.png (a.png ->
    a_mask.png), or, with `keep_extension` (another input of its folder has the same stem, e.g. a.png
    and a.jpg), its full name + _mask.png (a.png_mask.png), so no two inputs share a mask."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return f"{name[: -len(suffix)]}_mask{name[-len(suffix):]}"
    return f"{name if keep_extension else path.stem}_mask.png"


def mask_paths(sources: list[Path], source: Path) -> dict[Path, Path]:
    """Each source file's mask path relative to --out: the tree under a --source folder mirrored
    (p1/slice.png -> p1/slice_mask.png), the extension kept where two inputs of one folder share a
    stem (in any case), so two inputs never write one mask (predict also refuses a mask path already
    written: names differing in case only, on a disk that ignores case)."""
    root = source if source.is_dir() else source.parent
    stems = Counter((path.parent, path.stem.lower()) for path in sources if kind_of(path) != "nifti")
    return {path: path.relative_to(root).parent / mask_name(path, stems[(path.parent, path.stem.lower())] > 1)
            for path in sources}


@dataclass
class Predictor:
    """What predict runs: `probs` maps (N, H, W, C) uint8 model inputs to (N, H, W) float32
    probabilities (several classes: (N, channels, H, W)); `preprocess`, `threshold` and the
    classes with their per-region thresholds come with the model, and `post` is the post-processing
    record evaluate scored it with (medseg.scored_post; None: masks as thresholded)."""

    probs: Callable[[np.ndarray], np.ndarray]
    preprocess: dict[str, Any]
    threshold: float
    runtime: str
    classes: Classes = BINARY
    class_thresholds: list[float] | None = None
    post: dict[str, Any] | None = None
    post_source: str = "none"

    def masks(self, probs: np.ndarray, threshold: float | None) -> np.ndarray:
        """One image's probabilities -> its (H, W) bool mask, or (K, H, W) class masks (argmax, or each
        region at `threshold` when given, else at its own val threshold)."""
        if not self.classes.multi:
            return probs >= (self.threshold if threshold is None else threshold)
        cuts = None if threshold is None else [threshold] * len(self.classes.names)
        return self.classes.decide(probs[None], cuts or self.class_thresholds)[0]

    def cleaned(self, masks: np.ndarray, volume: bool) -> np.ndarray:
        """(D, H, W) masks (several classes: (D, K, H, W)) after the recorded post-processing; the 3D
        steps only when the D slices are one `volume`."""
        if self.post is None:
            return masks
        steps = [self.post["steps"][name] for name in step_names(self.classes)]  # in channel order, not the file's
        return apply_slices(masks, steps, self.post["size"], volume)


def find_record(choice: str | Path, name: str, classes: Classes, digests: list[str],
                embedded: dict[str, Any] | None = None) -> tuple[dict[str, Any] | None, str]:
    """The post-processing record to apply and where it came from. `choice` "off": none; "auto": the
    one inside an export (`embedded`), else evaluate's results/evaluate/<name>/postprocess.json when it
    exists and was chosen for this training (`digests`; else a warning and none); a path: that file,
    refused when chosen for another training."""
    if str(choice) == "off":
        return None, "off (--postprocess off)"
    if str(choice) == "auto" and embedded is not None:
        return embedded, "the export's model.json"
    if str(choice) != "auto":
        record = read_record(Path(choice), step_names(classes))
        check_belongs(record, str(choice), digests, name)
        return record, str(choice)
    path = paths.EVALUATE / name / RECORD
    if not path.exists():
        return None, f"none ({path} not found: evaluate has not scored this model here)"
    record = read_record(path, step_names(classes))
    try:
        check_belongs(record, str(path), digests, name)
    except MedsegError as err:  # evaluate here scored another training: said, and not applied
        log.warning("%s; masks are not post-processed", err)
        return None, f"none ({path} is another training's)"
    return record, str(path)


def load_predictor(model: Path, tta: bool | None, batch_size: int | None = None, amp: str = "auto",
                   postprocess: str | Path = "off") -> Predictor:
    """The one loader of `predict --model`: an ONNX export (its .onnx file or folder) runs with
    onnxruntime; a checkpoint or a k-fold model folder with PyTorch (the folds' mean probability).
    With a post-processing record (`postprocess`, see find_record) its threshold(s) and post-processing
    apply, and its TTA setting unless `tta` is given."""
    if is_export(model):
        onnx = OnnxModel.load(model)
        meta = onnx.meta
        record, source = find_record(postprocess, meta["model"], onnx.classes, meta.get("checkpoint_sha256", []),
                                     meta.get("postprocess"))
        flip = _tta(tta, record)
        return _with_record(Predictor(lambda images: onnx.probs(images, flip, batch_size or 32), meta["preprocess"],
                                      float(meta["threshold"]), "onnxruntime", onnx.classes,
                                      meta.get("class_thresholds")), record, source)
    from medseg.hardware import pick_amp_dtype, pick_device
    from medseg.model_loader import load_trained

    device = pick_device("auto")
    dtype = pick_amp_dtype(amp, device, key="--amp")  # auto: what this hardware runs natively, as training chose
    trained = load_trained(model)
    card = trained.card
    record, source = find_record(postprocess, card.header.model, card.classes,
                                 checkpoint_digests(card.checkpoints) if str(postprocess) != "off" else [])
    flip, trained = _tta(tta, record), trained.to(device)
    runtime = f"PyTorch on {device.type}, {card.folds} fold(s)"
    probs = trained.class_probs if card.classes.multi else trained.probs
    return _with_record(Predictor(lambda images: probs(images, device, flip, batch_size, dtype), card.header.preprocess,
                                  card.threshold.value, runtime, card.classes, card.threshold.per_class), record, source)


def _tta(tta: bool | None, record: dict[str, Any] | None) -> bool:
    return tta if tta is not None else bool(record and record["tta"])


def _with_record(predictor: Predictor, record: dict[str, Any] | None, source: str) -> Predictor:
    """The predictor deciding with the record's threshold(s) and post-processing, as evaluate scored."""
    predictor.post, predictor.post_source = record, source
    if record is not None:
        if record["threshold"] is not None:
            predictor.threshold = float(record["threshold"])
        predictor.class_thresholds = record["class_thresholds"] or predictor.class_thresholds
    return predictor


def model_inputs(images: list[np.ndarray], pre: dict[str, Any]) -> np.ndarray:
    """The uint8 batch the model sees: each unit-range image through convert's own path."""
    return np.stack([model_input(image, pre["size"], pre["channels"]) for image in images])


def unit_images(path: Path, pre: dict[str, Any]) -> list[np.ndarray]:
    """A source file's images in [0, 1], read as `convert` reads them: one for a 2D file or DICOM,
    the upright axial slices for a NIfTI volume. Under a model whose slices were rescaled per
    volume (preprocess `normalize: volume`), a 2D file takes the range of its folder's slices, as
    convert took each patient folder's."""
    kind = kind_of(path)
    if kind == "nifti":
        volume, _ = nifti_volume(path, (pre["window_level"], pre["window_width"]))
        return [volume_slice(volume, k) for k in range(volume.shape[2])]
    image = _unit_2d(path)
    if pre.get("normalize", "none") == "volume":
        image = rescale_channels(image, folder_ranges(path.parent, kind))
    return [image]


def _unit_2d(path: Path) -> np.ndarray:
    return dicom_image(path)[1] if kind_of(path) == "dicom" else file_image(path)


@functools.lru_cache(maxsize=4)
def folder_ranges(folder: Path, kind: str) -> list[tuple[float, float]]:
    """The per-channel MR range of the 2D files of `kind` in `folder` (not below it): one patient's
    slices. Mask files (names ending in _mask before the extension) take no part."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and kind_of(p) == kind and not is_clutter(p.name)
                   and not p.stem.endswith("_mask"))
    return channel_ranges([_unit_2d(p) for p in files])


def file_probs(path: Path, predictor: Predictor) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A source file's images in [0, 1] and their probabilities, resized back to each image's own size."""
    images = unit_images(path, predictor.preprocess)
    probs = predictor.probs(model_inputs(images, predictor.preprocess))
    return images, [resize_probs(p, img.shape[:2]) for p, img in zip(probs, images)]


def resize_probs(probs: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(H, W) or (channels, H, W) probabilities resized (bilinear) to `shape`."""
    if probs.ndim == 2:
        return cv2.resize(probs, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.stack([cv2.resize(p, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR) for p in probs])


def predict_2d(paths: list[Path], predictor: Predictor, threshold: float | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per 2D image or DICOM of `paths`: (image in [0, 1], bool mask at the file's own height x width, or
    (K, H, W) class masks); `threshold` None: the model's own. The files go through the model together
    (each is resized to the model's side first, so files of any sizes share its forward batches)."""
    images = [unit_images(path, predictor.preprocess)[0] for path in paths]
    probs = predictor.probs(model_inputs(images, predictor.preprocess)) if images else []
    return [(image, predictor.cleaned(predictor.masks(resize_probs(p, image.shape[:2]), threshold)[None],
                                      volume=False)[0]) for image, p in zip(images, probs)]


def label_map(classes: Classes, masks: np.ndarray) -> np.ndarray:
    """Exclusive classes' (K, ...) masks -> one uint8 label map of class indices (0 background, k: class k)."""
    out = np.zeros(masks.shape[1:], np.uint8)
    for k in range(len(classes.names)):
        out[masks[k]] = k + 1
    return out


def predict_nifti(path: Path, predictor: Predictor, threshold: float | None) -> nib.Nifti1Image:
    """A uint8 label volume with the input's shape and affine, slices predicted upright as trained:
    binary 0/1, exclusive classes as class indices, regions as one 0/1 volume per region (4D)."""
    original = load_nifti(path)
    _, probs = file_probs(path, predictor)
    slices = list(predictor.cleaned(np.stack([predictor.masks(p, threshold) for p in probs]), volume=True))
    if predictor.classes.mode == "exclusive":
        slices = [label_map(predictor.classes, m) for m in slices]
    if predictor.classes.mode == "regions":
        slices = [m.transpose(1, 2, 0) for m in slices]  # regions last: a 4D NIfTI
    mask_ras = np.stack([upright(m) for m in slices], axis=2)  # upright is its own inverse
    to_original = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "A", "S")), nib.orientations.io_orientation(original.affine))
    mask = np.stack([nib.orientations.apply_orientation(mask_ras[..., k], to_original)
                     for k in range(mask_ras.shape[3])], axis=3).astype(np.uint8) if mask_ras.ndim == 4 else \
        nib.orientations.apply_orientation(mask_ras, to_original).astype(np.uint8)
    if mask.shape[:3] != original.shape[:3]:
        raise MedsegError(f"{path}: internal orientation error ({mask.shape} vs {original.shape})")
    out = nib.Nifti1Image(mask, original.affine, original.header)
    out.set_data_dtype(np.uint8)
    return out
