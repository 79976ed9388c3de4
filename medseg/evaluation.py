"""Scores of one model's test predictions: per image, global, per case (re-stacked volumes), PR."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medseg.metrics import (global_dice, global_iou, hd95, nsd, overlap_scores, pixel_pr, pixel_scores,
                            thin_curve)
from medseg.params import EvaluateParams
from medseg.postprocess import clean_predictions, clean_stack, clean_volumes
from medseg.uncertainty import mean_ci


ISIC_JACCARD_FLOOR = 0.65  # ISIC 2018 Task 1: a per-image Jaccard below 0.65 counts as 0
MIN_AREA_CANDIDATES = (0, 4, 10, 25, 50, 100, 200)  # pixels, tried by `evaluate.min_area: auto`
MIN_VOLUME_CANDIDATES = (0, 10, 25, 50, 100, 200, 500, 1000)  # voxels, tried by `evaluate.min_volume: auto`
PIXEL_KEYS = ("accuracy", "sensitivity", "specificity")  # reported per case and per image


def parse_spacing(text: str) -> tuple[float, float, float] | None:
    """'row x col x slice' mm from the manifest, or None when unknown."""
    if not text:
        return None
    row, col, depth = (float(v) for v in text.split("x"))
    return row, col, depth


def mask_scores(pred: np.ndarray, gt: np.ndarray, empty: str) -> dict[str, float]:
    """Overlap and pixel scores (Dice, IoU, precision, recall, accuracy, sensitivity, specificity) of one image or volume."""
    return overlap_scores(pred, gt, empty) | pixel_scores(pred, gt, empty)


def per_image_table(slices: pd.DataFrame, pred: np.ndarray, gt: np.ndarray, empty: str) -> pd.DataFrame:
    rows = [mask_scores(p, g, empty) for p, g in zip(pred, gt)]
    table = pd.DataFrame(rows)
    table.insert(0, "slice_id", slices["slice_id"].to_numpy())
    table.insert(1, "group", slices["group"].to_numpy())
    one_rule = table if empty == "one" else pd.DataFrame([overlap_scores(p, g, "one") for p, g in zip(pred, gt)])
    table["siim_dice"] = one_rule["dice"].to_numpy()  # SIIM-ACR: empty truth scores 1 only if predicted empty
    table["isic_jaccard"] = np.where(one_rule["iou"] >= ISIC_JACCARD_FLOOR, one_rule["iou"], 0.0)
    table["gt_pixels"] = gt.reshape(len(gt), -1).sum(1)
    table["pred_pixels"] = pred.reshape(len(pred), -1).sum(1)
    return table


def per_case_table(slices: pd.DataFrame, pred: np.ndarray, gt: np.ndarray, empty: str,
                   nsd_tolerance_mm: float | None = None) -> pd.DataFrame:
    """3D scores of each group, its slices re-stacked in `index` order. The boundary metrics (HD95,
    NSD at `nsd_tolerance_mm`) only when a tolerance is given: tuning min_area needs Dice alone."""
    rows = []
    for group, part in slices.reset_index(drop=True).groupby("group", sort=True):
        order = part.sort_values("index").index.to_numpy()
        p, g = pred[order], gt[order]
        row = mask_scores(p, g, empty)
        if nsd_tolerance_mm is not None:
            spacing = parse_spacing(part["spacing"].iloc[0])
            zyx = (spacing[2], spacing[0], spacing[1]) if spacing else None  # slice, row, col: the stack's axes
            row["hd95_px"] = hd95(p, g)
            row["hd95_mm"] = hd95(p, g, zyx) if zyx else math.nan
            row["nsd"] = nsd(p, g, nsd_tolerance_mm, zyx, empty)
            row["nsd_units"] = "mm" if zyx else "px"
        rows.append({"group": group, "slices": len(order), "gt_voxels": int(g.sum()),
                     "pred_voxels": int(p.sum()), **row})
    return pd.DataFrame(rows)


def case_dice(slices: pd.DataFrame, pred: np.ndarray, gt: np.ndarray, empty: str) -> float:
    """Mean per-case 3D Dice, the headline metric (cases the empty rule leaves out are skipped)."""
    value = _mean(per_case_table(slices, pred, gt, empty)["dice"])
    return math.nan if value is None else value


def best_case_dice(slices: pd.DataFrame, gt: np.ndarray, empty: str, candidates: list[Any],
                   masks_of: Any) -> Any:
    """The candidate whose masks (`masks_of(candidate)`) score the highest mean per-case Dice on these
    cases; ties (and cases the empty rule leaves out) go to the earliest candidate, which removes least."""
    scores = [case_dice(slices, masks_of(c), gt, empty) for c in candidates]
    return candidates[int(np.argmax([-math.inf if math.isnan(v) else v for v in scores]))]


def tune_min_area(slices: pd.DataFrame, probs: np.ndarray, gt: np.ndarray, threshold: float,
                  empty: str, largest_only: bool) -> int:
    """The smallest component area (from MIN_AREA_CANDIDATES) that maximises val per-case Dice.

    Chosen on val, like nnU-Net chooses its post-processing, so the test split stays unseen;
    ties go to the smaller area, which removes less."""
    binary = probs >= threshold
    return best_case_dice(slices, gt, empty, list(MIN_AREA_CANDIDATES),
                          lambda area: clean_stack(binary, area, largest_only))


def tune_min_volume(slices: pd.DataFrame, binary: np.ndarray, gt: np.ndarray, empty: str) -> int:
    """The smallest 3D component volume (from MIN_VOLUME_CANDIDATES) that maximises per-case Dice on
    these cases; ties go to the smaller volume, which removes less."""
    return best_case_dice(slices, gt, empty, list(MIN_VOLUME_CANDIDATES),
                          lambda volume: clean_volumes(binary, slices, volume, False))


AUTO_STEPS = ("min_area", "min_volume", "largest_volume")  # the post-processing keys that take `auto`
OFF = {"min_area": 0, "min_volume": 0, "largest_volume": False}


def choose_postprocessing(cfg: EvaluateParams, val: pd.DataFrame, val_probs: np.ndarray | None,
                          val_gt: np.ndarray, threshold: float) -> dict[str, Any]:
    """The post-processing evaluate applies: explicit values as given; the `auto` keys decided
    together on val (the out-of-fold predictions with folds), as one choice among no filtering, the
    tuned 2D `min_area`, the tuned 3D `min_volume` and the largest 3D component, by val per-case Dice
    (ties: the earlier, which removes less). One choice, not a chain of greedy ones: a `min_area`
    tuned alone would cut the thin ends of the one lesion that `largest_volume` then keeps."""
    post = {"min_area": cfg.min_area, "largest_component": cfg.largest_component,
            "min_volume": cfg.min_volume, "largest_volume": cfg.largest_volume}
    autos = [k for k in AUTO_STEPS if post[k] == "auto"]
    if not autos:
        return post
    fixed = post | {k: OFF[k] for k in autos}
    binary = val_probs >= threshold
    candidates = [fixed]
    if "min_area" in autos:
        candidates.append(fixed | {"min_area": tune_min_area(val, val_probs, val_gt, threshold, cfg.empty,
                                                             cfg.largest_component)})
    if "min_volume" in autos:
        flat = clean_stack(binary, fixed["min_area"], cfg.largest_component)
        candidates.append(fixed | {"min_volume": tune_min_volume(val, flat, val_gt, cfg.empty)})
    if "largest_volume" in autos:
        candidates.append(fixed | {"largest_volume": True})
    return best_case_dice(val, val_gt, cfg.empty, candidates, lambda c: clean_predictions(binary, val, **c))


def uncertainty(cases: pd.DataFrame, resamples: int, seed: int) -> dict[str, float | None]:
    """95% bootstrap CIs over test cases of the mean per-case Dice and IoU, and the segmentation
    quality where there is something to segment: `dice_fg` over the cases with foreground."""
    fg = cases[cases["gt_voxels"] > 0]
    out: dict[str, float | None] = {"dice_fg": _mean(fg["dice"])}
    for key, values in (("dice", cases["dice"]), ("iou", cases["iou"]), ("dice_fg", fg["dice"])):
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = mean_ci(values, resamples, seed)
    return out


def detection(images: pd.DataFrame, cases: pd.DataFrame) -> dict[str, float | int | None]:
    """Detection of absent targets, apart from segmentation quality: the share of lesion-free test
    cases and images where anything is predicted (after post-processing)."""
    empty_cases, empty_images = cases[cases["gt_voxels"] == 0], images[images["gt_pixels"] == 0]
    rate = lambda part, col: float((part[col] > 0).mean()) if len(part) else None  # noqa: E731
    return {"fp_case_rate": rate(empty_cases, "pred_voxels"), "fp_image_rate": rate(empty_images, "pred_pixels"),
            "fg_cases": int((cases["gt_voxels"] > 0).sum()), "empty_cases": int(len(empty_cases))}


def _mean(values: pd.Series) -> float | None:
    value = float(np.nanmean(values)) if values.notna().any() else math.nan
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class Decided:
    """What one model's test split was scored on: its probabilities, the cut-off and post-processing
    (min_area, largest_component, min_volume, largest_volume) applied to them, the masks that gave, and
    the truth."""

    probs: np.ndarray
    threshold: float
    post: dict[str, Any]
    pred: np.ndarray
    gt: np.ndarray


def summarize(images: pd.DataFrame, cases: pd.DataFrame, decided: Decided,
              cfg: EvaluateParams) -> tuple[dict[str, Any], pd.DataFrame]:
    """metrics.json content and the thinned PR curve of one model from its per-image and per-case tables."""
    pred, gt, threshold, post = decided.pred, decided.gt, decided.threshold, decided.post
    ap, precision, recall, _ = pixel_pr(decided.probs, gt, cfg.pr_max_pixels, cfg.seed)
    metrics = {
        "dice": _mean(cases["dice"]), "iou": _mean(cases["iou"]),
        **uncertainty(cases, cfg.resamples, cfg.seed), **detection(images, cases),
        "ap": None if math.isnan(ap) else ap,
        "hd95_px": _mean(cases["hd95_px"]), "hd95_mm": _mean(cases["hd95_mm"]),
        "case_nsd": _mean(cases["nsd"]), "nsd_tolerance_mm": cfg.nsd_tolerance_mm,
        "nsd_units": "/".join(sorted(set(cases["nsd_units"]))),
        **{f"case_{k}": _mean(cases[k]) for k in PIXEL_KEYS},
        "image_dice": _mean(images["dice"]), "image_iou": _mean(images["iou"]),
        "image_precision": _mean(images["precision"]), "image_recall": _mean(images["recall"]),
        **{f"image_{k}": _mean(images[k]) for k in PIXEL_KEYS},
        "global_dice": global_dice(pred, gt), "global_iou": global_iou(pred, gt),
        "siim_dice": _mean(images["siim_dice"]), "isic_jaccard": _mean(images["isic_jaccard"]),
        "threshold": threshold, **post, "cases": int(len(cases)), "images": int(len(images)),
        "empty_rule": cfg.empty,
    }
    p, r = thin_curve(precision, recall)
    return metrics, pd.DataFrame({"recall": r, "precision": p})


