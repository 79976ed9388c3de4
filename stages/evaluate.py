"""Stage `evaluate`: score every trained model on the test split (threshold, min_area chosen on val).

Writes results/evaluate/<model>/{metrics.json, per_case.csv, per_image.csv, pr.csv},
results/evaluate/summary.md and the test probabilities to data/predictions/<model>.npz.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from medseg.checkpoints import load_checkpoint, model_from_checkpoint
from medseg.cli import run_stage
from medseg.evaluation import per_case_table, per_image_table, summarize, summary_markdown, tune_min_area
from medseg.hardware import pick_device
from medseg.inference import predict_probs
from medseg.metrics import best_f1_threshold, pixel_pr
from medseg.outputs import staged_dir, write_atomic, write_json
from medseg.params import MODEL_NAMES, load_section
from medseg.postprocess import clean_stack
from medseg.slices import dataset_info, load_arrays, read_manifest

log = logging.getLogger("medseg.evaluate")
SLICES = Path("data/slices")


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    cfg = load_section("evaluate")
    manifest = read_manifest(SLICES)
    split = pd.read_csv("data/split.csv", dtype={"slice_id": str, "group": str})
    rows = manifest.merge(split[["slice_id", "split"]], on="slice_id")
    channels = dataset_info(SLICES)["channels"]
    val, test = rows[rows["split"] == "val"], rows[rows["split"] == "test"]
    val_images, val_masks = load_arrays(SLICES, val["slice_id"].tolist(), channels)
    test_images, test_masks = load_arrays(SLICES, test["slice_id"].tolist(), channels)
    gt = test_masks.astype(bool)
    device = pick_device("auto")
    summary = {}
    with staged_dir(Path("results/evaluate")) as out, staged_dir(Path("data/predictions")) as preds:
        for name in MODEL_NAMES:
            path = Path("data/models") / name / "best.pt"
            model = model_from_checkpoint(load_checkpoint(path), path).to(device)
            threshold, min_area = cfg["threshold"], cfg["min_area"]
            if "auto" in (threshold, min_area):
                val_probs = predict_probs(model, val_images, device, tta=cfg["tta"])
            if threshold == "auto":
                _, prec, rec, thr = pixel_pr(val_probs, val_masks, cfg["pr_max_pixels"], cfg["seed"])
                threshold = best_f1_threshold(prec, rec, thr)
            if min_area == "auto":
                min_area = tune_min_area(val, val_probs, val_masks.astype(bool), threshold,
                                         cfg["empty"], cfg["largest_component"])
            probs = predict_probs(model, test_images, device, tta=cfg["tta"])
            pred = clean_stack(probs >= threshold, min_area, cfg["largest_component"])
            images = per_image_table(test, pred, gt, cfg["empty"])
            cases = per_case_table(test, pred, gt, cfg["empty"])
            metrics, pr = summarize(images, cases, pred, gt, probs, float(threshold), min_area, cfg)
            (out / name).mkdir()
            write_json(out / name / "metrics.json", metrics)
            cases.to_csv(out / name / "per_case.csv", index=False, float_format="%.6f")
            images.to_csv(out / name / "per_image.csv", index=False, float_format="%.6f")
            pr.to_csv(out / name / "pr.csv", index=False, float_format="%.6f")
            np.savez_compressed(preds / f"{name}.npz", slice_id=test["slice_id"].to_numpy().astype(str),
                                probs=np.round(probs * 255).astype(np.uint8), threshold=threshold,
                                min_area=min_area, largest_component=cfg["largest_component"])
            summary[name] = metrics
            log.info("%s: case Dice %.4f, IoU %.4f, AP %.4f (threshold %.3f, min_area %d)", name,
                     metrics["dice"] or 0, metrics["iou"] or 0, metrics["ap"] or 0, threshold, min_area)
        write_atomic(out / "summary.md", summary_markdown(summary, cfg["empty"]))


if __name__ == "__main__":
    run_stage(main)
