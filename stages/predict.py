"""Apply a trained model to new images: PNG/JPG/TIF, DICOM, NIfTI, or a folder of them.

Masks come out in each source's own geometry: a PNG of the input's size for 2D files, and for
NIfTI a uint8 volume with the input's shape and affine. The checkpoint alone is enough: it carries
the model, its params, the preprocessing it was trained with and the threshold chosen on val.

Usage: python -m stages.predict --model data/models/unet/best.pt --source PATH --out DIR
       [--threshold T] [--tta] [--overlay]
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import torch
from tqdm import tqdm

from medseg.checkpoints import load_checkpoint, model_from_checkpoint
from medseg.cli import run_stage
from medseg.errors import MedsegError
from medseg.hardware import pick_device
from medseg.outputs import staged_files, write_atomic
from medseg.plots import overlay
from medseg.prediction import kind_of, list_sources, predict_2d, predict_nifti

log = logging.getLogger("medseg.predict")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a best.pt/last.pt checkpoint")
    parser.add_argument("--source", type=Path, required=True, help="an image, DICOM, NIfTI or a folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--threshold", type=float, help="probability threshold (default: the checkpoint's)")
    parser.add_argument("--tta", action="store_true", help="average with a horizontally flipped pass")
    parser.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png (2D inputs)")
    return parser.parse_args()


def _encode_png(path: Path, array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array)
    if not ok:
        raise MedsegError(f"{path}: cannot encode PNG")
    return data.tobytes()


def predict_one(path: Path, model: torch.nn.Module, ckpt: dict, device: torch.device, threshold: float,
                args: argparse.Namespace, out: Path) -> None:
    """Write the mask (and optional overlay) of one source file into `out`."""
    stem = path.name.split(".")[0]
    if kind_of(path) == "nifti":
        volume = predict_nifti(path, model, ckpt["preprocess"], device, threshold, args.tta)
        write_atomic(out / f"{stem}_mask.nii.gz", _gzip(volume))
        return
    image, mask = predict_2d(path, model, ckpt["preprocess"], device, threshold, args.tta)
    target = out / f"{stem}_mask.png"
    write_atomic(target, _encode_png(target, mask.astype(np.uint8) * 255))
    if args.overlay:
        rgb = overlay(np.round(image * 255).astype(np.uint8), np.zeros_like(mask), mask)
        shown = out / f"{stem}_overlay.png"
        write_atomic(shown, _encode_png(shown, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)))


def main() -> None:
    args = parse_args()
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise MedsegError(f"--threshold={args.threshold} must lie in (0, 1)")
    ckpt = load_checkpoint(args.model)
    if "preprocess" not in ckpt:
        raise MedsegError(f"{args.model}: checkpoint lacks its preprocessing; retrain with this version")
    device = pick_device("auto")
    model = model_from_checkpoint(ckpt, args.model).to(device)
    threshold = args.threshold if args.threshold is not None else float(ckpt.get("threshold", 0.5))
    sources = list_sources(args.source)
    # all masks or none: a bad file midway leaves --out as it was; the bar closes before the error line
    with staged_files(args.out) as tmp, tqdm(sources, desc="predict", unit="file", disable=len(sources) == 1) as bar:
        for path in bar:
            predict_one(path, model, ckpt, device, threshold, args, tmp)
    log.info("%d file(s) -> %s (threshold %.3f)", len(sources), args.out, threshold)


def _gzip(volume: nib.Nifti1Image) -> bytes:
    import gzip

    return gzip.compress(volume.to_bytes(), compresslevel=6)


if __name__ == "__main__":
    run_stage(main)
