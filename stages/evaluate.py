"""Stage `evaluate`: score every trained model on the test split (threshold, min_area chosen on val).

Writes results/evaluate/<model>/{metrics.json, compute.json, per_case.csv, per_image.csv, pr.csv},
results/evaluate/comparison.json (paired tests between the models on the same test cases),
results/evaluate/summary.md and, in data/predictions/<model>.npz, the test probabilities and the
exact binary masks that were scored (visualize draws those, never a re-thresholded copy).
metrics.json holds only what the same params on the same machine reproduce byte for byte;
timings and memory go to compute.json.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medseg import paths
from medseg.checkpoints import load_checkpoint, model_from_checkpoint
from medseg.cli import run_stage
from medseg.errors import MedsegError
from medseg.evaluation import per_case_table, per_image_table, summarize, summary_markdown, tune_min_area
from medseg.hardware import device_name, pick_device
from medseg.inference import forward_flops, predict_probs
from medseg.metrics import best_f1_threshold, pixel_pr
from medseg.outputs import staged_dir, write_atomic, write_json
from medseg.params import load_section
from medseg.postprocess import clean_stack
from medseg.slices import SLICES, dataset_info, load_arrays, split_rows
from medseg.uncertainty import paired_comparison
from models import MODEL_NAMES

log = logging.getLogger("medseg.evaluate")


def choose_threshold(ckpt: dict[str, Any], path: Path, cfg: dict[str, Any],
                     val_probs: np.ndarray | None, val_masks: np.ndarray) -> tuple[float, str]:
    """The probability cut-off and where it came from: an explicit number, else the val best-F1
    threshold train stored in best.pt, recomputed on val only when TTA changes the probabilities."""
    if cfg["threshold"] != "auto":
        return float(cfg["threshold"]), "evaluate.threshold"
    if cfg["tta"]:
        _, prec, rec, thr = pixel_pr(val_probs, val_masks, cfg["pr_max_pixels"], cfg["seed"])
        return best_f1_threshold(prec, rec, thr), "best pixel F1 on val, with TTA"
    if "threshold_source" not in ckpt:
        raise MedsegError(f"{path}: holds no val threshold (its training did not finish); run its train stage")
    return float(ckpt["threshold"]), ckpt["threshold_source"]


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    cfg = load_section("evaluate")
    val, test = split_rows("val"), split_rows("test")
    info = dataset_info()
    channels, size = info["channels"], info["size"]
    val_images, val_masks = load_arrays(SLICES, val["slice_id"].tolist(), channels)
    test_images, test_masks = load_arrays(SLICES, test["slice_id"].tolist(), channels)
    gt = test_masks.astype(bool)
    device = pick_device("auto")
    summary, costs, case_tables = {}, {}, {}
    with staged_dir(paths.EVALUATE) as out, staged_dir(paths.PREDICTIONS) as preds:
        for name in MODEL_NAMES:
            path = paths.model_dir(name) / "best.pt"
            ckpt = load_checkpoint(path)
            model = model_from_checkpoint(ckpt, path).to(device)
            needs_val = cfg["min_area"] == "auto" or cfg["threshold"] == "auto" and cfg["tta"]
            val_probs = predict_probs(model, val_images, device, tta=cfg["tta"]) if needs_val else None
            threshold, source = choose_threshold(ckpt, path, cfg, val_probs, val_masks)
            min_area = cfg["min_area"]
            if min_area == "auto":
                min_area = tune_min_area(val, val_probs, val_masks.astype(bool), threshold,
                                         cfg["empty"], cfg["largest_component"])
            started = time.perf_counter()
            probs = predict_probs(model, test_images, device, tta=cfg["tta"])
            infer_seconds = time.perf_counter() - started
            pred = clean_stack(probs >= threshold, min_area, cfg["largest_component"])
            images = per_image_table(test, pred, gt, cfg["empty"])
            cases = per_case_table(test, pred, gt, cfg["empty"])
            metrics, pr = summarize(images, cases, pred, gt, probs, threshold, min_area, cfg)
            metrics |= provenance(ckpt, device)
            costs[name] = compute_cost(ckpt, model, channels, size, device, len(test_images) / infer_seconds)
            write_model_results(out / name, metrics, cases, images, pr)
            write_json(out / name / "compute.json", costs[name])
            np.savez_compressed(preds / f"{name}.npz", slice_id=test["slice_id"].to_numpy().astype(str),
                                probs=np.round(probs * 255).astype(np.uint8), masks=pred, threshold=threshold,
                                min_area=min_area, largest_component=cfg["largest_component"])
            summary[name], case_tables[name] = metrics, cases
            log.info("%s: case Dice %.4f, IoU %.4f, AP %.4f (threshold %.3f from %s, min_area %d)", name,
                     metrics["dice"] or 0, metrics["iou"] or 0, metrics["ap"] or 0, threshold, source, min_area)
        comparison = paired_comparison(case_tables, "dice", cfg["resamples"], cfg["seed"])
        write_json(out / "comparison.json", {"metric": "dice", "alpha": 0.05, "pairs": comparison})
        write_atomic(out / "summary.md", summary_markdown(summary, cfg["empty"], comparison, costs))


def provenance(ckpt: dict[str, Any], device) -> dict[str, Any]:
    """What produced the numbers: torch, and the device and autocast dtype training really used."""
    trained = ckpt.get("compute", {})
    return {"torch": trained.get("torch", "unknown"), "train_device": trained.get("device", "unknown"),
            "train_amp": trained.get("amp", "unknown"), "eval_device": device_name(device), "eval_amp": "fp32"}


def compute_cost(ckpt: dict[str, Any], model, channels: int, size: int, device, infer_ips: float) -> dict[str, Any]:
    """What a model cost, so a comparison on "equal terms" can be checked (Isensee et al. 2024)."""
    trained = ckpt.get("compute", {})
    return {"parameters": int(sum(p.numel() for p in model.parameters())),
            "gflops_per_image": forward_flops(model, channels, size, device) / 1e9, "image_size": size,
            "epochs": trained.get("epochs"), "train_seconds": trained.get("train_seconds"),
            "train_images_per_s": trained.get("train_images_per_s"),
            "train_peak_memory_mb": trained.get("peak_memory_mb"), "infer_images_per_s": infer_ips,
            "train_device": trained.get("device"), "train_amp": trained.get("amp"), "eval_device": device_name(device)}


def write_model_results(folder: Path, metrics: dict[str, Any], cases: pd.DataFrame, images: pd.DataFrame,
                        pr: pd.DataFrame) -> None:
    folder.mkdir()
    write_json(folder / "metrics.json", metrics)
    cases.to_csv(folder / "per_case.csv", index=False, float_format="%.6f")
    images.to_csv(folder / "per_image.csv", index=False, float_format="%.6f")
    pr.to_csv(folder / "pr.csv", index=False, float_format="%.6f")


if __name__ == "__main__":
    run_stage(main)
