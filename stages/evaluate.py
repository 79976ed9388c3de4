"""Stage `evaluate`: score every trained model on the test split (threshold, min_area chosen on val).

With K cross-validation folds a model is the ensemble of its K fold models (the mean of their
probabilities) on the test split; threshold and min_area are chosen on the out-of-fold
predictions (each non-test case by the fold model that did not train on it), which also give the
cross-validation estimate (`cv` in metrics.json, per_case_oof.csv) and a second set of paired
comparisons (`oof_pairs` in comparison.json).

Writes results/evaluate/<model>/{headline.json (the DVC metrics: dice with its CI, dice_fg, ap),
metrics.json (every score), compute.json, per_case.csv, per_image.csv, pr.csv, postprocess.json (the
threshold and post-processing scored, which predict and export apply)},
results/evaluate/comparison.json (paired tests between the models on the same test cases),
results/evaluate/summary.md and, in data/predictions/<model>.npz, the test probabilities and the
exact binary masks that were scored (visualize draws those, never a re-thresholded copy).
Everything under results/evaluate is reproduced byte for byte by the same params on the same machine;
evaluate's own timing goes to results/timings/evaluate.json, which neither DVC nor git tracks.
"""
from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medseg import paths
from medseg.cli import run_stage
from medseg.errors import MedsegError
from medseg.crossval import cv_markdown, cv_metrics
from medseg.oof import fold_of_rows, out_of_fold_probs
from medseg.evaluation import AUTO_STEPS, choose_postprocessing, per_case_table, per_image_table, summarize, summary_markdown
from medseg.compute import compute_cost, provenance
from medseg.hardware import amp_name, device_name, pick_amp_dtype, pick_device
from medseg.inference import predict_class_probs, predict_probs
from medseg.metrics import best_threshold
from medseg.outputs import staged_dir, write_atomic, write_json
from medseg.params import EvaluateParams
from medseg.plans import plan_markdown, read_plan
from medseg.postprocess import clean_predictions
from medseg.folds import mean_probs
from medseg.slices import SLICES, dataset_info, fold_count, fold_rows, load_arrays, split_rows
from medseg.trained import TrainedModel, check_fits_slices, load_trained
from medseg.uncertainty import paired_comparison
from medseg.class_scores import ClassResults, class_comparisons, classes_markdown, score_classes
from medseg.scored_post import BINARY_NAME, RECORD, make_record
from models import MODEL_NAMES

log = logging.getLogger("medseg.evaluate")


def choose_threshold(trained: TrainedModel, cfg: EvaluateParams, val_probs: np.ndarray | None,
                     val_masks: np.ndarray) -> tuple[float, str]:
    """The probability cut-off and where it came from: an explicit number, else the val best-F1
    threshold train stored in best.pt (the out-of-fold one in ensemble.json for a k-fold model),
    recomputed on val only when TTA changes the probabilities."""
    if cfg.threshold != "auto":
        return float(cfg.threshold), "evaluate.threshold"
    if cfg.tta:
        return best_threshold(val_probs, val_masks, cfg.seed, cfg.pr_max_pixels), "best pixel F1 on val, with TTA"
    if not trained.tuned:
        raise MedsegError(f"{trained.paths[0]}: holds no val threshold (its training did not finish); "
                          "run its train stage")
    return trained.threshold, trained.threshold_source


def load_model(name: str, folds: int, device) -> TrainedModel:
    """The model's networks on `device` (one, or one per fold), refused when they do not match the split."""
    if not paths.model_dir(name).exists():
        raise MedsegError(f"{paths.model_dir(name)}: missing; run the train_{name} stage first")
    trained = load_trained(paths.model_dir(name))
    check_fits_slices(trained, name, dataset_info(), SLICES)
    if trained.folds != folds:
        raise MedsegError(f"{paths.model_dir(name)}: holds {trained.folds} model(s) but data/split.csv has "
                          f"{folds} fold(s); run the train_{name} stage")
    return trained.to(device)


def main() -> None:
    argparse.ArgumentParser(prog="python -m stages.evaluate", description=__doc__).parse_args()
    cfg = EvaluateParams.load()
    folds = fold_count()
    val_parts = [fold_rows(k, "val") for k in range(folds)]  # without folds: the val split
    val, test = pd.concat(val_parts, ignore_index=True), split_rows("test")
    val_fold = fold_of_rows([len(p) for p in val_parts])
    info = dataset_info()
    channels, size = info["channels"], info["size"]
    val_images, val_masks = load_arrays(SLICES, val["slice_id"].tolist(), channels)
    test_images, test_masks = load_arrays(SLICES, test["slice_id"].tolist(), channels)
    gt = test_masks.astype(bool)
    device = pick_device("auto")
    amp = pick_amp_dtype(cfg.amp, device, key="evaluate.amp")
    summary, costs, case_tables, oof_tables, class_tables, speeds = {}, {}, {}, {}, {}, {}
    with staged_dir(paths.EVALUATE) as out, staged_dir(paths.PREDICTIONS) as preds:
        for name in MODEL_NAMES:
            trained = load_model(name, folds, device)
            batch = trained.batch_size if cfg.batch_size == "auto" else cfg.batch_size
            if trained.classes.multi:
                infer = partial(predict_class_probs, device=device, exclusive=trained.classes.mode == "exclusive",
                                batch_size=batch, amp_dtype=amp, tta=cfg.tta)
                result, speed, oof = evaluate_classes(
                    out / name, preds, name, trained, cfg, (val, val_images, val_masks, val_fold),
                    (test, test_images, test_masks), infer, provenance(trained.computes[0], device, amp_name(amp)))
                summary[name], case_tables[name], class_tables[name] = result.metrics, result.cases, result.per_class_cases
                if oof is not None:
                    oof_tables[name] = oof
                costs[name], speeds[name] = model_records(out / name, result.metrics, trained, info, device), speed
                continue
            needs_val = folds > 1 or any(getattr(cfg, k) == "auto" for k in AUTO_STEPS) or cfg.threshold == "auto" and cfg.tta
            infer = partial(predict_probs, device=device, batch_size=batch, amp_dtype=amp, tta=cfg.tta)
            val_probs = out_of_fold_probs(trained.members, val_images, val_fold, infer) if needs_val else None
            threshold, source = choose_threshold(trained, cfg, val_probs, val_masks)
            post = choose_postprocessing(cfg, val, val_probs, val_masks.astype(bool), threshold)
            started = time.perf_counter()
            probs = mean_probs([infer(model, test_images) for model in trained.members])
            speeds[name] = len(test_images) / max(time.perf_counter() - started, 1e-9)
            pred = clean_predictions(probs >= threshold, test, **post)
            images = per_image_table(test, pred, gt, cfg.empty)
            cases = per_case_table(test, pred, gt, cfg.empty, cfg.nsd_tolerance_mm)
            metrics, pr = summarize(images, cases, pred, gt, probs, threshold, post, cfg)
            metrics |= provenance(trained.computes[0], device, amp_name(amp))
            write_model_results(out / name, metrics, cases, images, pr)
            write_json(out / name / RECORD, make_record(name, trained.paths, size, threshold, None, cfg.tta,
                                                        {BINARY_NAME: post}, chosen_on(folds)))
            if folds > 1:
                oof_pred = clean_predictions(val_probs >= threshold, val, **post)
                oof = per_case_table(val, oof_pred, val_masks.astype(bool), cfg.empty, cfg.nsd_tolerance_mm)
                oof.insert(1, "fold", oof["group"].map(dict(zip(val["group"], val["fold"]))))
                metrics["cv"] = cv_metrics(oof, cfg.resamples, cfg.seed)
                write_json(out / name / "metrics.json", metrics)
                oof.to_csv(out / name / "per_case_oof.csv", index=False, float_format="%.6f")
                oof_tables[name] = oof
            costs[name] = model_records(out / name, metrics, trained, info, device)
            np.savez_compressed(preds / f"{name}.npz", slice_id=test["slice_id"].to_numpy().astype(str),
                                probs=np.round(probs * 255).astype(np.uint8), masks=pred, threshold=threshold, **post)
            summary[name], case_tables[name] = metrics, cases
            log.info("%s: case Dice %.4f, IoU %.4f, AP %.4f (threshold %.3f from %s; min_area %d, min_volume %d, "
                     "largest_volume %s)", name, metrics["dice"] or 0, metrics["iou"] or 0, metrics["ap"] or 0,
                     threshold, source, post["min_area"], post["min_volume"], post["largest_volume"])
            if folds > 1:
                log.info("%s: %d-fold CV per-case Dice %.4f over %d cases", name, folds,
                         metrics["cv"]["dice"] or 0, metrics["cv"]["cases"])
        comparison = paired_comparison(case_tables, "dice", cfg.resamples, cfg.seed)
        report = {"metric": "dice", "alpha": 0.05, "pairs": comparison}
        text = summary_markdown(summary, cfg.empty, comparison, costs)
        if class_tables:  # several classes: each class's scores and paired tests, as for the macro mean
            report["classes"] = class_comparisons(class_tables, cfg.resamples, cfg.seed)
            text += "\n" + classes_markdown(summary, report["classes"])
        if folds > 1:
            report["oof_pairs"] = paired_comparison(oof_tables, "dice", cfg.resamples, cfg.seed)
            text += "\n" + cv_markdown(summary, report["oof_pairs"])
        text += "\n" + plan_markdown(read_plan())
        write_json(out / "comparison.json", report)
        write_atomic(out / "summary.md", text)
    write_json(paths.TIMINGS / "evaluate.json", {name: {"infer_images_per_s": v, "eval_device": device_name(device),
                                                        "eval_amp": amp_name(amp)} for name, v in speeds.items()})
    log.info("test inference (images/s): %s (also in %s, which DVC does not track)",
             ", ".join(f"{n} {v:.0f}" for n, v in speeds.items()), paths.TIMINGS / "evaluate.json")


def evaluate_classes(folder: Path, preds: Path, name: str, trained: TrainedModel, cfg: EvaluateParams,
                     val: tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray],
                     test: tuple[pd.DataFrame, np.ndarray, np.ndarray], infer: Callable,
                     made_by: dict[str, Any]) -> tuple[ClassResults, float, pd.DataFrame | None]:
    """A multi-class model: per-class and macro scores (medseg.class_scores) written like a binary
    model's, each class's tables beside them (per_case_<class>.csv, pr_<class>.csv). With K folds the
    test probabilities are the folds' mean, the thresholds and post-processing come from the
    out-of-fold predictions, which are also scored as the CV estimate (`cv`, per_case_oof.csv).
    Returns the results, the test images per second and the out-of-fold macro per-case table."""
    thresholds = trained.class_thresholds
    if cfg.threshold != "auto" and trained.classes.mode == "regions":
        thresholds = [float(cfg.threshold)] * len(trained.classes.names)
    (val_rows, val_images, val_codes, val_fold), folds = val, trained.folds
    val_probs = out_of_fold_probs(trained.members, val_images, val_fold, infer)
    started = time.perf_counter()
    test_probs = mean_probs([infer(model, test[1]) for model in trained.members])
    speed = len(test[1]) / max(time.perf_counter() - started, 1e-9)
    result = score_classes(trained.classes, thresholds, cfg, val_rows, val_probs, val_codes, test[0], test_probs, test[2])
    result.metrics |= made_by
    folder.mkdir()
    oof = None
    if folds > 1:  # the out-of-fold cases scored with what was chosen on them, as the binary path does
        scored = score_classes(trained.classes, thresholds, cfg, val_rows, val_probs, val_codes, val_rows, val_probs,
                               val_codes, result.post)
        oof = scored.cases.copy()
        oof.insert(1, "fold", oof["group"].map(dict(zip(val_rows["group"], val_rows["fold"]))))
        result.metrics["cv"] = cv_metrics(oof, cfg.resamples, cfg.seed)
        oof.to_csv(folder / "per_case_oof.csv", index=False, float_format="%.6f")
    write_json(folder / "metrics.json", result.metrics)
    regions = trained.classes.mode == "regions"
    write_json(folder / RECORD, make_record(name, trained.paths, test[1].shape[1], None,
                                            (thresholds or [0.5] * len(trained.classes.names)) if regions else None,
                                            cfg.tta, result.post, chosen_on(folds)))
    result.cases.to_csv(folder / "per_case.csv", index=False, float_format="%.6f")
    for cname in trained.classes.names:
        result.per_class_cases[cname].to_csv(folder / f"per_case_{cname}.csv", index=False, float_format="%.6f")
        result.per_class_images[cname].to_csv(folder / f"per_image_{cname}.csv", index=False, float_format="%.6f")
        result.pr[cname].to_csv(folder / f"pr_{cname}.csv", index=False, float_format="%.6f")
    np.savez_compressed(preds / f"{name}.npz", slice_id=test[0]["slice_id"].to_numpy().astype(str),
                        probs=np.round(test_probs * 255).astype(np.uint8), masks=result.masks,
                        classes=np.array(trained.classes.names), class_mode=trained.classes.mode)
    log.info("%s: macro case Dice %.4f over %d classes (%s)", name, result.metrics["dice"] or 0,
             len(trained.classes.names), ", ".join(f"{c} {m['dice'] or 0:.3f}"
                                                   for c, m in result.metrics["classes"].items()))
    return result, speed, oof


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
    cost = compute_cost(trained.computes, trained.members[0], info["channels"], info["size"], device)
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


if __name__ == "__main__":
    run_stage(main)
