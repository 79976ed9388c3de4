"""Score one trained model on the test split as the evaluate stage does: the threshold and the
post-processing chosen on val (out of fold with K folds), the test scores with their CIs, the CV
estimate, and the files of one model folder under results/evaluate/ (metrics.json, headline.json,
compute.json, postprocess.json, per-case/per-image/PR tables) and data/predictions/<model>.npz.
The numbers come from medseg.evaluation and medseg.class_scores; the stage only loops over models."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medseg import paths
from medseg.class_scores import Predicted, class_comparisons, score_classes
from medseg.compute import compute_cost, provenance
from medseg.crossval import cv_metrics
from medseg.errors import MedsegError
from medseg.evaluation import AUTO_STEPS, Decided, choose_postprocessing, per_case_table, per_image_table, summarize
from medseg.folds import mean_probs
from medseg.hardware import amp_name
from medseg.inference import predict_class_probs, predict_probs
from medseg.metrics import best_threshold
from medseg.oof import fold_of_rows, out_of_fold_probs
from medseg.outputs import write_json
from medseg.params import EvaluateParams
from medseg.postprocess import clean_predictions
from medseg.scored_post import BINARY_NAME, RECORD, Applied, make_record
from medseg.slices import SLICES, dataset_info, fold_rows, load_arrays, split_rows
from medseg.model_loader import TrainedModel, check_fits_slices, load_trained
from medseg.tta import with_tta
from medseg.uncertainty import paired_comparison

log = logging.getLogger("medseg.evaluate")


@dataclass(frozen=True)
class Splits:
    """What every model is scored on: the val rows (the pooled folds with K folds), their images, masks
    and fold index, and the test rows, images and masks."""

    val: pd.DataFrame
    val_images: np.ndarray
    val_masks: np.ndarray
    val_fold: np.ndarray
    test: pd.DataFrame
    test_images: np.ndarray
    test_masks: np.ndarray


def load_splits(folds: int, channels: int) -> Splits:
    """The val (fold by fold) and test slices of data/slices as decoded arrays."""
    val_parts = [fold_rows(k, "val") for k in range(folds)]  # without folds: the val split
    val, test = pd.concat(val_parts, ignore_index=True), split_rows("test")
    val_images, val_masks = load_arrays(SLICES, val["slice_id"].tolist(), channels)
    test_images, test_masks = load_arrays(SLICES, test["slice_id"].tolist(), channels)
    return Splits(val, val_images, val_masks, fold_of_rows([len(p) for p in val_parts]), test, test_images, test_masks)


@dataclass(frozen=True)
class Scoring:
    """How models are scored and where to: the evaluate params, the device and autocast dtype, the
    staged results/evaluate and data/predictions folders, and the slice store's info.json."""

    cfg: EvaluateParams
    device: Any
    amp: Any
    out: Path
    preds: Path
    info: dict[str, Any]


@dataclass
class Scored:
    """One model's scores: metrics.json's record, the per-case table (macro over classes), the
    out-of-fold per-case table (K folds), the per-class per-case tables (several classes), its cost
    and its test images per second."""

    metrics: dict[str, Any]
    cases: pd.DataFrame
    oof: pd.DataFrame | None
    per_class_cases: dict[str, pd.DataFrame] | None
    cost: dict[str, Any]
    speed: float


def score_model(name: str, trained: TrainedModel, splits: Splits, how: Scoring) -> Scored:
    """Score `trained` (one model, or a k-fold ensemble) and write its files."""
    cfg = how.cfg
    batch = trained.card.batch_size if cfg.batch_size == "auto" else cfg.batch_size
    made_by = provenance(trained.card.computes[0], how.device, amp_name(how.amp))
    if trained.card.classes.multi:
        infer = partial(predict_class_probs, device=how.device, exclusive=trained.card.classes.mode == "exclusive",
                        batch_size=batch, amp_dtype=how.amp)
        return score_multiclass(name, trained, splits, how, with_tta(infer) if cfg.tta else infer, made_by)
    infer = partial(predict_probs, device=how.device, batch_size=batch, amp_dtype=how.amp, tta=cfg.tta)
    return score_binary(name, trained, splits, how, infer, made_by)


def compare_models(scored: dict[str, Scored], cfg: EvaluateParams, folds: int) -> dict[str, Any]:
    """comparison.json: paired per-case Dice tests between the models on the same test cases; per class
    where models have several; between their out-of-fold cases with K folds."""
    pairs = paired_comparison({name: s.cases for name, s in scored.items()}, "dice", cfg.resamples, cfg.seed)
    report: dict[str, Any] = {"metric": "dice", "alpha": 0.05, "pairs": pairs}
    per_class = {name: s.per_class_cases for name, s in scored.items() if s.per_class_cases is not None}
    if per_class:
        report["classes"] = class_comparisons(per_class, cfg.resamples, cfg.seed)
    if folds > 1:
        oof = {name: s.oof for name, s in scored.items() if s.oof is not None}
        report["oof_pairs"] = paired_comparison(oof, "dice", cfg.resamples, cfg.seed)
    return report


def score_binary(name: str, trained: TrainedModel, splits: Splits, how: Scoring, infer: Callable,
                 made_by: dict[str, Any]) -> Scored:
    """A binary model: threshold and post-processing from val, the test scores, and with K folds the
    out-of-fold cases scored as the CV estimate (`cv`, per_case_oof.csv)."""
    cfg, folds, folder, s = how.cfg, trained.card.folds, how.out / name, splits
    needs_val = folds > 1 or any(getattr(cfg, k) == "auto" for k in AUTO_STEPS) or cfg.threshold == "auto" and cfg.tta
    val_probs = out_of_fold_probs(trained.members, s.val_images, s.val_fold, infer) if needs_val else None
    threshold, source = choose_threshold(trained, cfg, val_probs, s.val_masks)
    post = choose_postprocessing(cfg, s.val, val_probs, s.val_masks.astype(bool), threshold)
    started = time.perf_counter()
    probs = mean_probs(infer(model, s.test_images) for model in trained.members)
    speed = len(s.test_images) / max(time.perf_counter() - started, 1e-9)
    pred, gt = clean_predictions(probs >= threshold, s.test, **post), s.test_masks.astype(bool)
    images = per_image_table(s.test, pred, gt, cfg.empty)
    cases = per_case_table(s.test, pred, gt, cfg.empty, cfg.nsd_tolerance_mm)
    metrics, pr = summarize(images, cases, Decided(probs, threshold, post, pred, gt), cfg)
    metrics |= made_by
    oof = None
    if folds > 1:
        oof_pred = clean_predictions(val_probs >= threshold, s.val, **post)
        oof = per_case_table(s.val, oof_pred, s.val_masks.astype(bool), cfg.empty, cfg.nsd_tolerance_mm)
        oof.insert(1, "fold", oof["group"].map(dict(zip(s.val["group"], s.val["fold"]))))
        metrics["cv"] = cv_metrics(oof, cfg.resamples, cfg.seed)
    write_model_results(folder, metrics, cases, images, pr)
    if oof is not None:
        oof.to_csv(folder / "per_case_oof.csv", index=False, float_format="%.6f")
    applied = Applied(threshold, None, cfg.tta, {BINARY_NAME: post})
    write_json(folder / RECORD, make_record(name, trained.card.checkpoints, how.info["size"], applied, chosen_on(folds)))
    cost = model_records(folder, metrics, trained, how.info, how.device)
    np.savez_compressed(how.preds / f"{name}.npz", slice_id=s.test["slice_id"].to_numpy().astype(str),
                        probs=np.round(probs * 255).astype(np.uint8), masks=pred, threshold=threshold, **post)
    log.info("%s: case Dice %.4f, IoU %.4f, AP %.4f (threshold %.3f from %s; min_area %d, min_volume %d, "
             "largest_volume %s)", name, metrics["dice"] or 0, metrics["iou"] or 0, metrics["ap"] or 0,
             threshold, source, post["min_area"], post["min_volume"], post["largest_volume"])
    if folds > 1:
        log.info("%s: %d-fold CV per-case Dice %.4f over %d cases", name, folds, metrics["cv"]["dice"] or 0,
                 metrics["cv"]["cases"])
    return Scored(metrics, cases, oof, None, cost, speed)


def choose_threshold(trained: TrainedModel, cfg: EvaluateParams, val_probs: np.ndarray | None,
                     val_masks: np.ndarray) -> tuple[float, str]:
    """The probability cut-off and where it came from: an explicit number, else the val best-F1
    threshold train stored in best.pt (the out-of-fold one in ensemble.json for a k-fold model),
    recomputed on val only when TTA changes the probabilities."""
    if cfg.threshold != "auto":
        return float(cfg.threshold), "evaluate.threshold"
    if cfg.tta:
        return best_threshold(val_probs, val_masks, cfg.seed, cfg.pr_max_pixels), "best pixel F1 on val, with TTA"
    if not trained.card.threshold.tuned:
        raise MedsegError(f"{trained.card.checkpoints[0]}: holds no val threshold (its training did not finish); "
                          "run its train stage")
    return trained.card.threshold.value, trained.card.threshold.source


def load_model(name: str, folds: int, device) -> TrainedModel:
    """The model's networks on `device` (one, or one per fold), refused when they do not match the split."""
    if not paths.model_dir(name).exists():
        raise MedsegError(f"{paths.model_dir(name)}: missing; run the train_{name} stage first")
    trained = load_trained(paths.model_dir(name))
    check_fits_slices(trained, name, dataset_info(), SLICES)
    if trained.card.folds != folds:
        raise MedsegError(f"{paths.model_dir(name)}: holds {trained.card.folds} model(s) but data/split.csv has "
                          f"{folds} fold(s); run the train_{name} stage")
    return trained.to(device)


def score_multiclass(name: str, trained: TrainedModel, splits: Splits, how: Scoring, infer: Callable,
                     made_by: dict[str, Any]) -> Scored:
    """A multi-class model: per-class and macro scores (medseg.class_scores) written like a binary
    model's, each class's tables beside them (per_case_<class>.csv, pr_<class>.csv). With K folds the
    test probabilities are the folds' mean, the thresholds and post-processing come from the
    out-of-fold predictions, which are also scored as the CV estimate (`cv`, per_case_oof.csv)."""
    cfg, folder, folds, classes = how.cfg, how.out / name, trained.card.folds, trained.card.classes
    thresholds = trained.card.threshold.per_class
    if cfg.threshold != "auto" and classes.mode == "regions":
        thresholds = [float(cfg.threshold)] * len(classes.names)
    val_split = Predicted(splits.val, out_of_fold_probs(trained.members, splits.val_images, splits.val_fold, infer),
                          splits.val_masks)
    started = time.perf_counter()
    test_probs = mean_probs(infer(model, splits.test_images) for model in trained.members)
    speed = len(splits.test_images) / max(time.perf_counter() - started, 1e-9)
    result = score_classes(classes, thresholds, cfg, val_split, Predicted(splits.test, test_probs, splits.test_masks))
    result.metrics |= made_by
    folder.mkdir()
    oof = None
    if folds > 1:  # the out-of-fold cases scored with what was chosen on them, as the binary path does
        oof = score_classes(classes, thresholds, cfg, val_split, val_split, result.post).cases.copy()
        oof.insert(1, "fold", oof["group"].map(dict(zip(splits.val["group"], splits.val["fold"]))))
        result.metrics["cv"] = cv_metrics(oof, cfg.resamples, cfg.seed)
        oof.to_csv(folder / "per_case_oof.csv", index=False, float_format="%.6f")
    write_json(folder / "metrics.json", result.metrics)
    cuts = (thresholds or [0.5] * len(classes.names)) if classes.mode == "regions" else None
    write_json(folder / RECORD, make_record(name, trained.card.checkpoints, how.info["size"],
                                            Applied(None, cuts, cfg.tta, result.post), chosen_on(folds)))
    result.cases.to_csv(folder / "per_case.csv", index=False, float_format="%.6f")
    for cname in classes.names:
        result.per_class_cases[cname].to_csv(folder / f"per_case_{cname}.csv", index=False, float_format="%.6f")
        result.per_class_images[cname].to_csv(folder / f"per_image_{cname}.csv", index=False, float_format="%.6f")
        result.pr[cname].to_csv(folder / f"pr_{cname}.csv", index=False, float_format="%.6f")
    np.savez_compressed(how.preds / f"{name}.npz", slice_id=splits.test["slice_id"].to_numpy().astype(str),
                        probs=np.round(test_probs * 255).astype(np.uint8), masks=result.masks,
                        classes=np.array(classes.names), class_mode=classes.mode)
    log.info("%s: macro case Dice %.4f over %d classes (%s)", name, result.metrics["dice"] or 0, len(classes.names),
             ", ".join(f"{c} {m['dice'] or 0:.3f}" for c, m in result.metrics["classes"].items()))
    cost = model_records(folder, result.metrics, trained, how.info, how.device)
    return Scored(result.metrics, result.cases, oof, result.per_class_cases, cost, speed)


HEADLINE = "headline.json"  # the one metrics file per model DVC tables show: dvc metrics show / exp show / diff
HEADLINE_KEYS = ("dice", "dice_ci_low", "dice_ci_high", "dice_fg", "ap")


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """What `dvc metrics show` and `dvc exp show` put in a row: the per-case Dice with its CI, dice_fg
    and AP (several classes: their macro means), and the CV Dice with k folds; the full record stays
    in metrics.json."""
    cv = metrics.get("cv") or {}
    return {key: metrics.get(key) for key in HEADLINE_KEYS} | {f"cv_{k}": cv.get(k) for k in ("dice", "dice_ci_low",
                                                                                             "dice_ci_high") if cv}


def model_records(folder: Path, metrics: dict[str, Any], trained: TrainedModel, info: dict[str, Any],
                  device) -> dict[str, Any]:
    """Write a scored model's headline.json and compute.json (what it cost, from its checkpoints); return the cost."""
    cost = compute_cost(trained.card.computes, trained.members[0], info["channels"], info["size"], device)
    write_json(folder / HEADLINE, headline(metrics))
    write_json(folder / "compute.json", cost)
    return cost


def chosen_on(folds: int) -> str:
    return "the out-of-fold predictions of the non-test cases" if folds > 1 else "the val split"


def write_model_results(folder: Path, metrics: dict[str, Any], cases: pd.DataFrame, images: pd.DataFrame,
                        pr: pd.DataFrame) -> None:
    folder.mkdir()
    write_json(folder / "metrics.json", metrics)
    cases.to_csv(folder / "per_case.csv", index=False, float_format="%.6f")
    images.to_csv(folder / "per_image.csv", index=False, float_format="%.6f")
    pr.to_csv(folder / "pr.csv", index=False, float_format="%.6f")


