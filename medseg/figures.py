"""The figures of the `visualize` stage, from what train and evaluate wrote: the curves per model (and
fold), the cases shown (the best and the worst by Dice, each at its largest-lesion slice), their
overlays and feature maps, the per-epoch grids, and the inputs the stage needs, checked first."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from medseg import paths
from medseg.activations import look_inside
from medseg.classes import BINARY, Classes
from medseg.errors import MedsegError
from medseg.model_loader import check_fits_slices, load_trained
from medseg.plots import class_overlay, epoch_panels, overlay
from medseg.slices import SLICES, dataset_info, load_arrays
from models import MODEL_NAMES


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


def ap_label(rows: dict[str, dict], label: str) -> str:
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
