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

import numpy as np
import pandas as pd

from medseg import paths
from medseg.activations import look_inside
from medseg.cli import run_stage
from medseg.errors import MedsegError
from medseg.outputs import staged_dir
from medseg.params import VisualizeParams
from medseg.classes import BINARY, Classes
from medseg.plots import (class_overlay, dice_boxplot, epoch_panels, forest_plot, line_chart, map_grid, overlay,
                          overlay_grid)
from medseg.slices import SLICES, dataset_info, load_arrays, slice_classes, split_rows
from medseg.trained import check_fits_slices, load_trained
from models import MODEL_NAMES

log = logging.getLogger("medseg.visualize")


def training_series(metric: str) -> dict[str, pd.DataFrame]:
    """Per model (per model and fold, with cross-validation folds) the curve of `metric` by epoch."""
    series = {}
    for m in MODEL_NAMES:
        curves = pd.read_csv(paths.fold_curves(m), sep="\t")
        for fold, part in curves.groupby("fold"):
            series[m if curves["fold"].nunique() == 1 else f"{m} fold {fold}"] = part[["step", metric]]
    return series


def chosen_cases(cases: pd.DataFrame, test: pd.DataFrame, count: int) -> list[tuple[str, str, str, float]]:
    """(best/worst, group, slice id, case Dice): the `count` best and worst cases by Dice (among cases
    with foreground), each at its largest-lesion slice."""
    ranked = cases[cases["gt_voxels"] > 0].sort_values("dice", ascending=False)
    best = min(count, (len(ranked) + 1) // 2)  # few cases: the upper half is "best", the rest "worst"
    chosen = [("best", g) for g in ranked["group"].head(best)]
    chosen += [("worst", g) for g in ranked["group"].iloc[best:].tail(count)[::-1]]
    out = []
    for label, group in chosen:
        slice_id = test[test["group"] == group].sort_values("fg_pixels")["slice_id"].iloc[-1]
        out.append((label, group, slice_id, float(cases.loc[cases["group"] == group, "dice"].iloc[0])))
    return out


def case_panels(name: str, cases: pd.DataFrame, test: pd.DataFrame, count: int, channels: int,
                classes: Classes = BINARY) -> list:
    """Overlays of the best and worst cases, with the masks exactly as evaluate scored them (several
    classes: each in its colour; the case Dice is then the mean over the classes)."""
    preds = np.load(paths.PREDICTIONS / f"{name}.npz")
    mask_of = dict(zip(preds["slice_id"], preds["masks"]))  # exactly what evaluate scored
    panels = []
    for label, group, slice_id, dice in chosen_cases(cases, test, count):
        images, masks = load_arrays(SLICES, [slice_id], channels)
        picture = (class_overlay(images[0], classes.masks_of(masks)[0], mask_of[slice_id]) if classes.multi
                   else overlay(images[0], masks[0] > 0, mask_of[slice_id]))
        panels.append((f"{label}: {group}\ncase Dice {dice:.3f}", picture))
    return panels


def class_series(classes: Classes) -> tuple[dict[str, pd.DataFrame], dict[str, dict]]:
    """Several classes: per model and class, its PR curve and its metrics (the forest plot's rows
    under each model's macro mean)."""
    curves, rows = {}, {}
    for m in MODEL_NAMES:
        metrics = json.loads((paths.EVALUATE / m / "metrics.json").read_text())
        rows[f"{m} (mean over classes)"] = metrics
        for c in classes.names:
            curves[f"{m}: {c}"] = pd.read_csv(paths.EVALUATE / m / f"pr_{c}.csv")
            rows[f"{m}: {c}"] = metrics["classes"][c]
    return curves, rows


def _ap(rows: dict[str, dict], label: str) -> str:
    """A PR curve's AP for its legend: the model's (binary) or the model's class's."""
    ap = rows.get(label, rows.get(label.split(":")[0], {})).get("ap")
    return "n/a" if ap is None else f"{ap:.3f}"


EPOCHS_SHOWN = 3  # per model on the plots page: the first, a middle and the last logged epoch


def epoch_grids(name: str, path) -> None:
    """The val prediction grids train logged (dvclive, one per epoch; a k-fold model: fold 0), at
    the first, a middle and the last epoch, side by side with titled columns: the plots page shows
    how the model learned without one thumbnail per epoch."""
    folder = paths.train_log_dir(name)
    folder = folder if (folder / "plots").exists() else paths.train_log_dir(name, 0)
    logged = sorted((folder / "plots/images/val_predictions").glob("*.png"), key=lambda p: int(p.stem))
    if not logged:
        raise MedsegError(f"{folder / 'plots/images/val_predictions'}: no per-epoch grid; run the train_{name} stage")
    picks = sorted({0, len(logged) // 2, len(logged) - 1})[:EPOCHS_SHOWN]
    epoch_panels([(f"epoch {int(logged[k].stem) + 1}", logged[k]) for k in picks], name, path)


def feature_rows(name: str, cases: pd.DataFrame, test: pd.DataFrame, channels: int) -> list:
    """Per best and worst case slice, as the model (a k-fold model: its fold 0) sees it: each encoder
    stage's mean activation and each attention gate, then each stage's Grad-CAM of the lesion."""
    trained = load_trained(paths.model_dir(name))
    check_fits_slices(trained, name, dataset_info(), SLICES)
    model = trained.members[0]
    rows = []
    for label, group, slice_id, dice in chosen_cases(cases, test, 1):
        images, masks = load_arrays(SLICES, [slice_id], channels)
        top, bottom = look_inside(model, images[0], masks[0] > 0).panels()
        rows.append((f"{label}: {group}\ncase Dice {dice:.3f}", images[0], masks[0], top))
        rows.append(("Grad-CAM of the\nforeground logits\nover the true lesion\n(pytorch-grad-cam)",
                     None, masks[0], bottom))
    return rows


def require_inputs(classes: Classes) -> None:
    """One line naming a missing input and the stage that makes it, before any figure is drawn."""
    pr = [f"pr_{c}.csv" for c in classes.names] if classes.multi else ["pr.csv"]
    needed = [(paths.fold_curves(m), f"train_{m}") for m in MODEL_NAMES]
    needed += [(paths.EVALUATE / m / name, "evaluate") for m in MODEL_NAMES for name in ("per_case.csv", *pr,
                                                                                        "metrics.json")]
    needed += [(paths.PREDICTIONS / f"{m}.npz", "evaluate") for m in MODEL_NAMES]
    for path, stage in needed:
        if not path.exists():
            raise MedsegError(f"{path}: missing; run the {stage} stage first")


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
        curves = {f"{label} (AP {_ap(rows, label)})": frame for label, frame in curves.items()}
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
