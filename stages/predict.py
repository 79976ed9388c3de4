"""Apply a trained model to new images: PNG/JPG/TIF, DICOM, NIfTI, or a folder of them.

Masks come out in each source's own geometry: a PNG of the input's size for 2D files
(<stem>_mask.png, e.g. a_mask.png; a.png_mask.png and a.jpg_mask.png where two inputs of a folder
share a stem), and for NIfTI a uint8 volume with the input's shape
and affine (<case>_mask.nii.gz or .nii, as the input); the tree under a --source folder is
mirrored under --out. The model alone is enough: a checkpoint
carries the network, its params, the preprocessing it was trained with and the threshold chosen on
val; a k-fold model folder (fold_<k>/best.pt + ensemble.json) averages its folds' probabilities and
uses ensemble.json's threshold. The masks are decided and post-processed as evaluate scored the
model (--postprocess; its threshold, min_area and largest component, and on NIfTI volumes its 3D
steps), so deployed masks are scored masks. An ONNX export (`stages.export`: model.onnx + model.json, or their
folder) runs with onnxruntime, without importing PyTorch.

Usage: python -m stages.predict --model data/models/unet/best.pt --source PATH --out DIR
       [--threshold T] [--tta] [--postprocess auto|off|FILE] [--overlay]
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
from tqdm import tqdm

from medseg.cli import run_stage
from medseg.errors import MedsegError
from medseg.outputs import staged_files, write_atomic
from medseg.scored_post import describe, has_volume_steps
from medseg.plots import class_overlay, overlay
from medseg.prediction import (Predictor, kind_of, label_map, list_sources, load_predictor, mask_paths, predict_2d,
                               predict_nifti)

log = logging.getLogger("medseg.predict")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True,
                        help="a best.pt checkpoint, a k-fold model folder, or an ONNX export (model.onnx or its folder)")
    parser.add_argument("--source", type=Path, required=True, help="an image, DICOM, NIfTI or a folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--threshold", type=float, help="probability threshold (default: the model's)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="average with a horizontally flipped pass (default: as evaluate scored the model)")
    parser.add_argument("--postprocess", default="auto", metavar="auto|off|FILE",
                        help="the threshold(s) and post-processing (min_area, largest component; min_volume and "
                        "largest volume on NIfTI volumes) to apply: auto = what evaluate scored the model with "
                        "(an export's model.json, else results/evaluate/<model>/postprocess.json when present); "
                        "off = the model's val threshold alone; or a postprocess.json")
    parser.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto",
                        help="autocast dtype of the PyTorch path: auto = what this hardware runs natively; off = fp32")
    parser.add_argument("--batch-size", type=int, help="slices per forward pass (default: the training batch; "
                        "32 for an ONNX export)")
    parser.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png (2D inputs)")
    return parser.parse_args()


def _encode_png(path: Path, array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array)
    if not ok:
        raise MedsegError(f"{path}: cannot encode PNG")
    return data.tobytes()


FILES_PER_PASS = 32  # 2D files read and sent through the model together (without --batch-size)


def predict_files(paths: list[Path], targets: dict[Path, Path], predictor: Predictor, threshold: float | None,
                  args: argparse.Namespace) -> None:
    """Write the masks of `paths` (their `targets`): each NIfTI volume alone, the 2D files together."""
    for path in paths:
        if kind_of(path) == "nifti":
            volume = predict_nifti(path, predictor, threshold)
            target = free(path, targets[path])
            write_atomic(target, _gzip(volume) if target.name.lower().endswith(".gz") else volume.to_bytes())
    flat = [path for path in paths if kind_of(path) != "nifti"]
    for path, (image, mask) in zip(flat, predict_2d(flat, predictor, threshold)):
        write_2d(free(path, targets[path]), image, mask, predictor, args)


def free(path: Path, target: Path) -> Path:
    """`target`, unless another input's mask already took it (only where the disk ignores case: A.png, a.png)."""
    if target.exists():
        raise MedsegError(f"{path}: its mask {target.name} is taken by another input's (names that differ only "
                          "in case, on a file system that ignores case); rename one")
    return target


def write_2d(target: Path, image: np.ndarray, mask: np.ndarray, predictor: Predictor, args: argparse.Namespace) -> None:
    """Write one 2D file's mask to `target` (and the optional overlay beside it): exclusive classes as one
    label map of class indices, regions as one mask per region beside it."""
    classes = predictor.classes
    if classes.mode == "exclusive":
        write_atomic(target, _encode_png(target, label_map(classes, mask)))
    elif classes.mode == "regions":
        for name, region in zip(classes.names, mask):
            region_path = target.with_name(target.name.removesuffix("_mask.png") + f"_{name}_mask.png")
            write_atomic(region_path, _encode_png(region_path, region.astype(np.uint8) * 255))
    else:
        write_atomic(target, _encode_png(target, mask.astype(np.uint8) * 255))
    if args.overlay:
        grey = np.round(image * 255).astype(np.uint8)
        rgb = class_overlay(grey, np.zeros_like(mask), mask) if classes.multi else overlay(grey, None, mask)
        shown = target.with_name(target.name.removesuffix("_mask.png") + "_overlay.png")
        write_atomic(shown, _encode_png(shown, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)))


def main() -> None:
    args = parse_args()
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise MedsegError(f"--threshold={args.threshold} must lie in (0, 1)")
    if args.batch_size is not None and args.batch_size < 1:
        raise MedsegError(f"--batch-size={args.batch_size} must be at least 1")
    sources = list_sources(args.source, skip=args.out)
    targets = mask_paths(sources, args.source)  # the source tree mirrored: no two inputs share a mask
    # all masks or none: a bad file midway leaves --out as it was; the bar closes before the error line
    with staged_files(args.out) as tmp:
        predictor = load_predictor(args.model, args.tta, args.batch_size, args.amp, args.postprocess)
        if args.threshold is not None and predictor.classes.mode == "exclusive":
            raise MedsegError(f"--threshold={args.threshold}: {args.model} holds exclusive classes, decided by argmax; "
                              "leave --threshold out")
        step = args.batch_size or FILES_PER_PASS
        staged = {path: tmp / target for path, target in targets.items()}
        with tqdm(total=len(sources), desc="predict", unit="file", disable=len(sources) == 1) as bar:
            for start in range(0, len(sources), step):
                chunk = sources[start:start + step]
                predict_files(chunk, staged, predictor, args.threshold, args)
                bar.update(len(chunk))
    log.info("%d file(s) -> %s (%s, %s; %s from %s)", len(sources), args.out, cut_off(predictor, args.threshold),
             predictor.runtime, describe(predictor.post), predictor.post_source)
    if predictor.post is not None and has_volume_steps(list(predictor.post["steps"].values())) and any(
            kind_of(p) != "nifti" for p in sources):
        log.info("min_volume / largest_volume act on NIfTI volumes only: the 2D files were post-processed slice by "
                 "slice (min_area, largest component)")


def cut_off(predictor: Predictor, threshold: float | None) -> str:
    """How the masks were decided, for the log line."""
    if predictor.classes.mode == "exclusive":
        return f"argmax over {', '.join(predictor.classes.names)}"
    if predictor.classes.mode == "regions" and threshold is None:
        cuts = predictor.class_thresholds or [0.5] * len(predictor.classes.names)
        return "thresholds " + ", ".join(f"{n} {t:.3f}" for n, t in zip(predictor.classes.names, cuts))
    return f"threshold {predictor.threshold if threshold is None else threshold:.3f}"


def _gzip(volume: nib.Nifti1Image) -> bytes:
    import gzip

    return gzip.compress(volume.to_bytes(), compresslevel=6)


if __name__ == "__main__":
    run_stage(main)
