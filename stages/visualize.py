"""Stage `visualize`: figures in results/plots/ — training curves, PR curves, per-case Dice box
plot, and overlays of the best and worst test cases of each model."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from medseg.cli import run_stage
from medseg.outputs import staged_dir
from medseg.params import MODEL_NAMES, load_section
from medseg.plots import dice_boxplot, line_chart, overlay, overlay_grid
from medseg.postprocess import clean_mask
from medseg.slices import dataset_info, load_arrays, read_manifest

log = logging.getLogger("medseg.visualize")
SLICES = Path("data/slices")


def training_series(metric: str) -> dict[str, pd.DataFrame]:
    return {m: pd.read_csv(Path("results/train") / m / "plots/metrics" / f"{metric}.tsv", sep="\t")
            for m in MODEL_NAMES}


def case_panels(name: str, cases: pd.DataFrame, test: pd.DataFrame, count: int, channels: int) -> list:
    """Best and worst cases by Dice (among cases with foreground), each at its largest-lesion slice."""
    preds = np.load(Path("data/predictions") / f"{name}.npz")
    prob_of = dict(zip(preds["slice_id"], preds["probs"]))
    threshold = float(preds["threshold"])
    ranked = cases[cases["gt_voxels"] > 0].sort_values("dice", ascending=False)
    chosen = [("best", g) for g in ranked["group"].head(count)]
    chosen += [("worst", g) for g in ranked["group"].tail(count)[::-1] if g not in ranked["group"].head(count).tolist()]
    panels = []
    for label, group in chosen:
        part = test[test["group"] == group]
        slice_id = part.sort_values("fg_pixels")["slice_id"].iloc[-1]
        images, masks = load_arrays(SLICES, [slice_id], channels)
        pred = clean_mask(prob_of[slice_id] / 255.0 >= threshold, int(preds["min_area"]),
                          bool(preds["largest_component"]))  # as evaluate scored it
        dice = float(cases.loc[cases["group"] == group, "dice"].iloc[0])
        panels.append((f"{label}: {group}\ncase Dice {dice:.3f}", overlay(images[0], masks[0] > 0, pred)))
    return panels


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    cfg = load_section("visualize")
    manifest = read_manifest(SLICES)
    split = pd.read_csv("data/split.csv", dtype={"slice_id": str, "group": str})
    test = manifest.merge(split[["slice_id", "split"]], on="slice_id").query("split == 'test'")
    channels = dataset_info(SLICES)["channels"]
    evaluate = Path("results/evaluate")
    cases = {m: pd.read_csv(evaluate / m / "per_case.csv", dtype={"group": str}) for m in MODEL_NAMES}
    with staged_dir(Path("results/plots")) as out:
        line_chart(training_series("train_loss"), "step", "train_loss", "epoch", "train loss",
                   out / "train_loss.png")
        line_chart(training_series("val_dice"), "step", "val_dice", "epoch", "val Dice", out / "val_dice.png")
        line_chart({m: pd.read_csv(evaluate / m / "pr.csv") for m in MODEL_NAMES}, "recall", "precision",
                   "recall", "precision", out / "pr_curves.png")
        dice_boxplot({m: c["dice"] for m, c in cases.items()}, out / "case_dice_boxplot.png")
        (out / "overlays").mkdir()
        for name in MODEL_NAMES:
            panels = case_panels(name, cases[name], test, cfg["cases"], channels)
            overlay_grid(panels, name, out / "overlays" / f"{name}.png", columns=min(len(panels), 4))
    log.info("wrote figures to results/plots")


if __name__ == "__main__":
    run_stage(main)
