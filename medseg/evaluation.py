"""Scores of one model's test predictions: per image, global, per case (re-stacked volumes), PR."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from medseg.metrics import (EMPTY_RULES, global_dice, global_iou, hd95, nsd, overlap_scores, pixel_pr, pixel_scores,
                            thin_curve)
from medseg.params import EvaluateParams
from medseg.postprocess import clean_predictions, clean_stack, clean_volumes
from medseg.uncertainty import MIN_CASES, comparison_sentence, mean_ci


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


def summarize(images: pd.DataFrame, cases: pd.DataFrame, pred: np.ndarray, gt: np.ndarray,
              probs: np.ndarray, threshold: float, post: dict[str, Any],
              cfg: EvaluateParams) -> tuple[dict[str, Any], pd.DataFrame]:
    """metrics.json content and the thinned PR curve of one model; `post` is the post-processing used
    (min_area, largest_component, min_volume, largest_volume)."""
    ap, precision, recall, _ = pixel_pr(probs, gt, cfg.pr_max_pixels, cfg.seed)
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


METRIC_NOTES = {
    "dice [95% CI]": "mean over test cases of the 3D Dice of the re-stacked volume, with its percentile-bootstrap 95% CI over cases",
    "iou [95% CI]": "mean over test cases of the 3D IoU, with its CI",
    "dice_fg [95% CI]": "mean per-case Dice over the test cases that hold foreground: segmentation quality alone",
    "fp_case_rate, fp_image_rate": "share of lesion-free test cases / images with any predicted foreground: detection of absent targets",
    "ap": "pixel average precision (scikit-learn) over a uniform pixel subsample",
    "hd95": "mean over cases of the 95th-percentile Hausdorff distance (MONAI); cases with an empty side left out",
    "case_nsd": "mean over cases of the normalised surface Dice (MONAI): the share of both 3D boundaries within "
                "`evaluate.nsd_tolerance_mm` of the other (in pixels where no spacing is recorded); an empty "
                "truth follows the empty rule, an empty prediction of a lesion scores 0",
    "case_sensitivity, case_specificity": "mean over cases of TP / (TP + FN) (= recall) and TN / (TN + FP) of the "
                                          "volume; an empty truth follows the empty rule; `case_accuracy` and the "
                                          "`image_` versions (per slice) in metrics.json",
    "image_dice": "mean per-image Dice",
    "global_dice": "Dice of all test pixels pooled",
    "siim_dice": "SIIM-ACR challenge metric: mean per-image Dice, an empty truth scoring 1 only when predicted empty",
    "isic_jaccard": "ISIC 2018 Task 1 metric: mean per-image Jaccard, values below 0.65 counted as 0",
    "threshold, min_area": "probability cut-off (best pixel F1 on val, from best.pt) and smallest kept connected component (pixels, chosen on val when `auto`)",
    "min_volume, largest_volume": "post-processing of each case's re-stacked volume after min_area: smallest kept 3D "
                                  "connected component (voxels) and whether only the largest is kept, chosen on val "
                                  "(out-of-fold predictions with folds) when `auto`",
}


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def with_ci(m: dict[str, Any], key: str) -> str:
    """'0.912 [0.851, 0.953]' for metric `key` of a model ('0.912' where no CI was computed)."""
    if m.get(key) is None:
        return "n/a"
    if f"{key}_ci_low" not in m:
        return f"{m[key]:.3f}"
    return f"{m[key]:.3f} [{_fmt(m.get(key + '_ci_low'))}, {_fmt(m.get(key + '_ci_high'))}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


def comparison_table(pairs: list[dict[str, Any]]) -> list[str]:
    rows = [[f"{p['a']} − {p['b']}", str(p["cases"]),
             f"{_fmt(p['mean_diff'])} [{_fmt(p['ci_low'])}, {_fmt(p['ci_high'])}]",
             "n/a" if p["p_wilcoxon"] is None else f"{p['p_wilcoxon']:.3g}",
             _fmt(p["median_diff"]), p["favours"] or "neither",
             "n/a" if p["p_holm"] is None else f"{p['p_holm']:.3g}", "yes" if p["significant"] else "no"]
            for p in pairs]
    return _table(["pair (a − b)", "cases", "mean Dice difference [95% CI]", "Wilcoxon p", "median difference",
                   "ranks favour", "Holm p", "significant at 0.05"], rows)


def cost_table(costs: dict[str, dict[str, Any]]) -> list[str]:
    number = lambda v, f: "n/a" if v is None else format(v, f)  # noqa: E731
    rows = [[name, number(c["parameters"] / 1e6, ".2f"), number(c["gflops_per_image"], ".2f"), _fmt(c["epochs"]),
             number(c["train_seconds"], ".0f"), number(c["train_images_per_s"], ".1f"),
             number(c["train_peak_memory_mb"], ".0f"), f"{c['train_device']} ({c['train_amp']})"]
            for name, c in costs.items()]
    size = next(iter(costs.values()))["image_size"] if costs else "?"
    return _table(["model", "parameters (M)", f"GFLOPs / image at {size} px", "epochs", "train s",
                   "train img/s", "train peak memory (MB)", "trained on (autocast)"], rows)


def summary_markdown(metrics: dict[str, dict[str, Any]], empty: str, pairs: list[dict[str, Any]],
                     costs: dict[str, dict[str, Any]]) -> str:
    """Every model's scores with their CIs, the paired comparisons in numbers and in words, what
    each model cost, and the metric definitions with the empty-mask rule."""
    first = next(iter(metrics.values()), {})
    several = "classes" in first  # the macro mean over classes: its per-class detail is in the Per class section
    plain = ["ap"] if several else [
        "fp_case_rate", "fp_image_rate", "ap", "hd95_px", "case_nsd", "case_sensitivity", "image_dice",
        "global_dice", "siim_dice", "isic_jaccard", "threshold", "min_area", "min_volume", "largest_volume"]
    rows = [[name, with_ci(m, "dice"), with_ci(m, "iou"), with_ci(m, "dice_fg"), *(_fmt(m.get(c)) for c in plain)]
            for name, m in metrics.items()]
    cases = (f"{first.get('cases')} test cases, scored per class ({', '.join(first['classes'])}; "
             f"{first.get('class_mode')}) and as the macro mean over the classes per case" if several else
             f"{first.get('cases')} test cases ({first.get('fg_cases')} with foreground, "
             f"{first.get('empty_cases')} lesion-free)")
    if (first.get("cases") or 0) < MIN_CASES:
        cases += (f". **Fewer than {MIN_CASES} test cases: every CI and test below is too wide or too weak to mean "
                  "anything; read these scores as a check that the pipeline runs, not as a result**")
    notes = [f"- `{k}`: {v}" for k, v in METRIC_NOTES.items()]
    return "\n".join(["# Test-split results", "", f"{cases}; `evaluate.empty: {empty}`.", "",
                      *_table(["model", "dice [95% CI]", "iou [95% CI]", "dice_fg [95% CI]", *plain], rows), "",
                      "## Paired comparison (per-case Dice on the same test cases)", "",
                      *comparison_table(pairs), "", comparison_sentence(pairs), "",
                      "## Compute", "", *cost_table(costs), "",
                      f"Empty ground truth rule (`evaluate.empty: {empty}`): {EMPTY_RULES[empty]}.", "",
                      *notes, ""])
