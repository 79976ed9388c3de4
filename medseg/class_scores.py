"""Scores of a multi-class model, as the field reports them: every class scored as its own binary
problem by medseg.evaluation (per case and per image: Dice, IoU, HD95, NSD under the empty rule;
its mean with a CI; post-processing chosen on val per class), and the macro mean over the classes
(background excluded) per case as the headline, with its CI over cases.

Evaluate's binary path is the one-class case of this and stays as it was (no `classes` key in its
metrics.json), so the committed binary results do not move.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medseg.classes import Classes
from medseg.evaluation import (Decided, _mean, choose_postprocessing, per_case_table,
                               per_image_table, summarize)
from medseg.params import EvaluateParams
from medseg.postprocess import clean_predictions
from medseg.uncertainty import mean_ci, paired_comparison

MACRO_KEYS = ("dice", "iou")  # averaged over the classes per case: the headline table


@dataclass
class ClassResults:
    """One model's per-class tables and metrics, and the macro per-case table with its metrics."""

    metrics: dict[str, Any]  # the headline (macro) keys, plus "classes": {name: that class's metrics}
    cases: pd.DataFrame  # per case: group, the macro dice/iou, and <key>_<class> for every class
    per_class_cases: dict[str, pd.DataFrame]
    per_class_images: dict[str, pd.DataFrame]
    pr: dict[str, pd.DataFrame]
    masks: np.ndarray  # (N, K, H, W) bool: the scored test masks, after each class's post-processing
    post: dict[str, dict[str, Any]]


def class_probability(probs: np.ndarray, classes: Classes, k: int) -> np.ndarray:
    """Class k's own probability channel: after the background channel for exclusive classes."""
    return probs[:, k + 1] if classes.mode == "exclusive" else probs[:, k]


@dataclass(frozen=True)
class Predicted:
    """A split's rows, a multi-class network's probabilities on them (N x channels x H x W) and the slice
    store's codes (the truth)."""

    rows: pd.DataFrame
    probs: np.ndarray
    codes: np.ndarray


def score_classes(classes: Classes, thresholds: list[float] | None, cfg: EvaluateParams, val_split: Predicted,
                  test_split: Predicted, chosen: dict[str, dict[str, Any]] | None = None) -> ClassResults:
    """Decide (argmax, or each region at its val threshold), post-process each class as chosen on
    val (or as `chosen` gives, already chosen), and score every class and the macro mean over classes
    on the test split."""
    val, val_probs, val_codes = val_split.rows, val_split.probs, val_split.codes
    test, test_probs, test_codes = test_split.rows, test_split.probs, test_split.codes
    val_pred, test_pred = classes.decide(val_probs, thresholds), classes.decide(test_probs, thresholds)
    val_truth, test_truth = classes.masks_of(val_codes), classes.masks_of(test_codes)
    per_class, cases_of, images_of, prs, posts, masks = {}, {}, {}, {}, {}, np.zeros_like(test_pred)
    for k, name in enumerate(classes.names):
        # the decided masks as 0/1 "probabilities" at cut 0.5: the binary machinery chooses min_area and friends
        post = chosen[name] if chosen else choose_postprocessing(cfg, val, val_pred[:, k].astype(np.float32),
                                                                 val_truth[:, k], 0.5)
        pred, gt = clean_predictions(test_pred[:, k], test, **post), test_truth[:, k]
        images = per_image_table(test, pred, gt, cfg.empty)
        cases = per_case_table(test, pred, gt, cfg.empty, cfg.nsd_tolerance_mm)
        threshold = 0.5 if thresholds is None else float(thresholds[k])
        metrics, pr = summarize(images, cases, Decided(class_probability(test_probs, classes, k), threshold, post, pred,
                                                       gt), cfg)
        per_class[name], cases_of[name], images_of[name], prs[name], posts[name] = metrics, cases, images, pr, post
        masks[:, k] = pred
    macro = macro_cases(cases_of)
    headline: dict[str, Any] = {}
    for key in MACRO_KEYS:
        headline[key] = _mean(macro[key])
        headline[f"{key}_ci_low"], headline[f"{key}_ci_high"] = mean_ci(macro[key], cfg.resamples, cfg.seed)
    first = next(iter(per_class.values()))
    headline |= {"ap": _mean(pd.Series([m["ap"] for m in per_class.values()], dtype=float)),
                 "dice_fg": _mean(pd.Series([m["dice_fg"] for m in per_class.values()], dtype=float)),
                 "cases": first["cases"], "images": first["images"], "empty_rule": cfg.empty,
                 "class_mode": classes.mode, "classes": per_class}
    return ClassResults(headline, macro, cases_of, images_of, prs, masks, posts)


def macro_cases(cases_of: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per case, each class's Dice and IoU (<key>_<class>) and their mean over the classes a case is
    scored on (a class the empty rule leaves out of a case is left out of its mean)."""
    names = list(cases_of)
    table = cases_of[names[0]][["group"]].copy()
    for key in MACRO_KEYS:
        columns = [f"{key}_{name}" for name in names]
        for name, column in zip(names, columns):
            table[column] = cases_of[name][key].to_numpy()
        with np.errstate(all="ignore"):
            table[key] = table[columns].mean(axis=1, skipna=True)
    table["gt_voxels"] = sum(cases_of[name]["gt_voxels"].to_numpy() for name in names)
    return table


def class_comparisons(class_tables: dict[str, dict[str, pd.DataFrame]], resamples: int,
                      seed: int) -> dict[str, list[dict[str, Any]]]:
    """Per class, the paired comparisons of every model pair on that class's per-case Dice."""
    names = next(iter(class_tables.values()))
    return {c: paired_comparison({m: tables[c] for m, tables in class_tables.items()}, "dice", resamples, seed)
            for c in names}


