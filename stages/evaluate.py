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

from medseg import paths
from medseg.cli import run_stage
from medseg.hardware import amp_name, device_name, pick_amp_dtype, pick_device
from medseg.outputs import staged_dir, write_atomic, write_json
from medseg.params import EvaluateParams
from medseg.plans import read_plan
from medseg.reporting import evaluate_summary, plan_markdown
from medseg.scoring import Scoring, compare_models, load_model, load_splits, score_model
from medseg.slices import dataset_info, fold_count
from models import MODEL_NAMES

log = logging.getLogger("medseg.evaluate")


def main() -> None:
    argparse.ArgumentParser(prog="python -m stages.evaluate", description=__doc__).parse_args()
    cfg, folds, info = EvaluateParams.load(), fold_count(), dataset_info()
    splits = load_splits(folds, info["channels"])
    device = pick_device(cfg.device, key="evaluate.device")
    amp = pick_amp_dtype(cfg.amp, device, key="evaluate.amp")
    with staged_dir(paths.EVALUATE) as out, staged_dir(paths.PREDICTIONS) as preds:
        how = Scoring(cfg, device, amp, out, preds, info)
        scored = {name: score_model(name, load_model(name, folds, device), splits, how) for name in MODEL_NAMES}
        report = compare_models(scored, cfg, folds)
        text = evaluate_summary({n: s.metrics for n, s in scored.items()}, cfg.empty, report,
                                {n: s.cost for n, s in scored.items()})
        write_json(out / "comparison.json", report)
        write_atomic(out / "summary.md", text + "\n" + plan_markdown(read_plan()))
    timings = {name: {"infer_images_per_s": s.speed, "eval_device": device_name(device), "eval_amp": amp_name(amp)}
               for name, s in scored.items()}
    write_json(paths.TIMINGS / "evaluate.json", timings)
    log.info("test inference (images/s): %s (also in %s, which DVC does not track)",
             ", ".join(f"{n} {s.speed:.0f}" for n, s in scored.items()), paths.TIMINGS / "evaluate.json")


if __name__ == "__main__":
    run_stage(main)
