"""Segmentation metrics with explicit rules for empty masks; the definitions are the product.

Per-image and per-case overlap and pixel scores are written out here because the empty-mask rule
must be a parameter; MONAI computes HD95 and the normalised surface Dice, scikit-learn the PR curve
and average precision.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance, compute_surface_dice
from sklearn.metrics import average_precision_score, precision_recall_curve

# MONAI 1.5 calls its own deprecated get_mask_edges argument inside these two functions and warns on
# every call (once per case and model in evaluate's log); the warning is about MONAI, not the user's input.
warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)

EMPTY_RULES = {
    "one": "an image with empty ground truth scores 1 if the prediction is empty too, else 0",
    "nan": "images with empty ground truth are left out of the mean",
    "zero": "an image with empty ground truth scores 0",
}


def global_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Micro Dice over all pixels of all images (1.0 when both are empty everywhere)."""
    inter = np.logical_and(pred, gt).sum()
    total = pred.sum() + gt.sum()
    return 1.0 if total == 0 else float(2 * inter / total)


def global_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def _counts(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, float, float]:
    """True positives, false positives, false negatives, true negatives."""
    tp = float(np.logical_and(pred, gt).sum())
    fp = float(np.logical_and(pred, ~gt).sum())
    fn = float(np.logical_and(~pred, gt).sum())
    return tp, fp, fn, pred.size - tp - fp - fn


def _empty_score(empty: str, clean: bool) -> float:
    """The score of a ratio whose reference set is empty, under rule `empty`; `clean`: nothing was predicted into it."""
    return {"one": 1.0 if clean else 0.0, "nan": np.nan, "zero": 0.0}[empty]


def overlap_scores(pred: np.ndarray, gt: np.ndarray, empty: str) -> dict[str, float]:
    """Dice, IoU, precision, recall of one binary image or volume under the empty-GT rule."""
    tp, fp, fn, _ = _counts(pred, gt)
    if tp + fn == 0:  # empty ground truth
        value = _empty_score(empty, fp == 0)
        return {"dice": value, "iou": value, "precision": value, "recall": value}
    return {
        "dice": 2 * tp / (2 * tp + fp + fn),
        "iou": tp / (tp + fp + fn),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn),
    }


def pixel_scores(pred: np.ndarray, gt: np.ndarray, empty: str) -> dict[str, float]:
    """Pixel accuracy, sensitivity (= recall) and specificity of one binary image or volume.

    Sensitivity of an empty truth follows the empty rule as Dice does; so does specificity when
    every pixel is foreground (no negatives), mirrored: 1 under `one` only if all is predicted."""
    tp, fp, fn, tn = _counts(pred, gt)
    return {
        "accuracy": (tp + tn) / pred.size,
        "sensitivity": tp / (tp + fn) if tp + fn else _empty_score(empty, fp == 0),
        "specificity": tn / (tn + fp) if tn + fp else _empty_score(empty, fn == 0),
    }


def _surface_pair(pred: np.ndarray, gt: np.ndarray,
                  spacing: tuple[float, ...] | None) -> tuple[torch.Tensor, torch.Tensor, list[float] | None]:
    """MONAI's (1, 1, *spatial) inputs; a one-slice volume becomes 2D, since in 3D every one of its
    pixels would lie on the surface (its top and bottom faces)."""
    if pred.ndim == 3 and pred.shape[0] == 1:
        pred, gt, spacing = pred[0], gt[0], spacing[1:] if spacing else None
    as_tensor = lambda m: torch.from_numpy(np.ascontiguousarray(m)[None, None].astype(np.float32))  # noqa: E731
    return as_tensor(pred), as_tensor(gt), list(spacing) if spacing else None


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...] | None = None) -> float:
    """95th-percentile Hausdorff distance (MONAI), in pixels or in mm with `spacing`; NaN if either is empty."""
    if not pred.any() or not gt.any():
        return float("nan")
    p, g, spacing = _surface_pair(pred, gt, spacing)
    return float(compute_hausdorff_distance(p, g, percentile=95, spacing=spacing).item())


def nsd(pred: np.ndarray, gt: np.ndarray, tolerance: float, spacing: tuple[float, ...] | None, empty: str) -> float:
    """Normalised surface Dice (MONAI): the share of both boundaries within `tolerance` of the other
    (mm with `spacing`, else pixels). An empty truth follows the empty rule as Dice does; an empty
    prediction of a non-empty truth scores 0."""
    if not gt.any():
        return _empty_score(empty, not pred.any())
    if not pred.any():
        return 0.0
    p, g, spacing = _surface_pair(pred, gt, spacing)
    value = compute_surface_dice(p, g, [float(tolerance)], include_background=True, spacing=spacing)
    return float(value.item())


def pixel_pr(probs: np.ndarray, gt: np.ndarray, max_pixels: int, seed: int) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Average precision and a PR curve over at most `max_pixels` pixels (uniform subsample).

    Returns (ap, precision, recall, thresholds); NaN AP when no pixel is positive.
    """
    p, g = probs.ravel(), gt.ravel().astype(bool)
    if p.size > max_pixels:
        idx = np.random.default_rng(seed).choice(p.size, max_pixels, replace=False)
        p, g = p[idx], g[idx]
    if not g.any():
        return float("nan"), np.array([1.0]), np.array([0.0]), np.array([])
    precision, recall, thresholds = precision_recall_curve(g, p, drop_intermediate=True)
    return float(average_precision_score(g, p)), precision, recall, thresholds


def best_f1_threshold(precision: np.ndarray, recall: np.ndarray, thresholds: np.ndarray) -> float:
    """The PR-curve threshold with the highest F1 (pixel Dice)."""
    if thresholds.size == 0:
        return 0.5
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    return float(thresholds[int(np.argmax(f1))])


def thin_curve(precision: np.ndarray, recall: np.ndarray, points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """At most `points` points of a PR curve, evenly spaced in recall, for plotting."""
    if len(recall) <= points:
        return precision, recall
    idx = np.unique(np.linspace(0, len(recall) - 1, points).round().astype(int))
    return precision[idx], recall[idx]


THRESHOLD_PIXELS = 1_000_000  # pixels sampled to choose a cut-off where no evaluate.pr_max_pixels applies (training)


def best_threshold(probs: np.ndarray, masks: np.ndarray, seed: int, max_pixels: int = THRESHOLD_PIXELS) -> float:
    """The best pixel-F1 cut-off of these probabilities against these masks (on a `max_pixels`
    subsample): the one rule every threshold medseg chooses follows (train's on val, the k-fold
    ensemble's out of fold, evaluate's under TTA)."""
    _, precision, recall, thresholds = pixel_pr(probs, masks, max_pixels, seed)
    return best_f1_threshold(precision, recall, thresholds)
