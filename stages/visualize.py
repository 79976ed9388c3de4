"""Stage `visualize`: figures in results/plots/ — training curves, PR curves, per-case Dice box
plot, a forest plot of every model's Dice with its 95% CI, per model training/<model>.png (its
val prediction grid at the first, a middle and the last epoch), overlays of the best and worst test
cases of each model, and per model features/<model>.png: the mean activation of each encoder
stage, the attention coefficients of every gate (attn_unet) and a Grad-CAM, for the best and the
worst case."""
from __future__ import annotations

import argparse
import json
import logging

import pandas as pd

from medseg import paths
from medseg.cli import run_stage
from medseg.figures import (ap_label, case_panels, class_series, epoch_grids, feature_rows, require_inputs,
                            training_series)
from medseg.outputs import staged_dir
from medseg.params import VisualizeParams
from medseg.plots import dice_boxplot, forest_plot, line_chart, map_grid, overlay_grid
from medseg.slices import dataset_info, slice_classes, split_rows
from models import MODEL_NAMES

log = logging.getLogger("medseg.visualize")


def main() -> None:
    argparse.ArgumentParser(prog="python -m stages.visualize", description=__doc__).parse_args()
    cfg = VisualizeParams.load()
    classes = slice_classes()
    require_inputs(classes)
    test = split_rows("test")
    channels = dataset_info()["channels"]
    evaluate = paths.EVALUATE
    cases = {m: pd.read_csv(evaluate / m / "per_case.csv", dtype={"group": str}) for m in MODEL_NAMES}
    with staged_dir(paths.PLOTS) as out:
        line_chart(training_series("train_loss"), "step", "train_loss", "epoch", "train loss",
                   out / "train_loss.png")
        line_chart(training_series("val_dice"), "step", "val_dice", "epoch", "val Dice", out / "val_dice.png")
        if classes.multi:
            curves, rows = class_series(classes)
        else:
            curves = {m: pd.read_csv(evaluate / m / "pr.csv") for m in MODEL_NAMES}
            rows = {m: json.loads((evaluate / m / "metrics.json").read_text()) for m in MODEL_NAMES}
        curves = {f"{label} (AP {ap_label(rows, label)})": frame for label, frame in curves.items()}
        line_chart(curves, "recall", "precision", "recall", "precision", out / "pr_curves.png")
        dice_boxplot({m: c["dice"] for m, c in cases.items()}, out / "case_dice_boxplot.png")
        forest_plot(rows, out / "forest.png")
        (out / "training").mkdir()
        for name in MODEL_NAMES:
            epoch_grids(name, out / "training" / f"{name}.png")
        (out / "overlays").mkdir()
        for name in MODEL_NAMES:
            panels = case_panels(name, cases[name], test, cfg.cases, channels, classes)
            overlay_grid(panels, name, out / "overlays" / f"{name}.png", columns=min(len(panels), 4),
                         class_names=list(classes.names) if classes.multi else None)
        if classes.multi:  # the encoder maps and Grad-CAM explain one foreground logit
            log.info("features/: drawn for binary models only; these have %d classes", len(classes.names))
            log.info("wrote figures to results/plots")
            return
        (out / "features").mkdir()
        for name in MODEL_NAMES:
            map_grid(feature_rows(name, cases[name], test, channels), name, out / "features" / f"{name}.png",
                     gates=name == "attn_unet")
    log.info("wrote figures to results/plots")


if __name__ == "__main__":
    run_stage(main)
