"""One model of the pipeline trained from the slice store: its single run, or its K fold runs (fold k
validates on fold k, a killed run resuming in the fold it was in), the run id that ties the folds of
one training together, and the ensemble's threshold chosen on the folds' out-of-fold predictions."""
from __future__ import annotations

import hashlib
import json
import logging
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch

from medseg import paths
from medseg.classes import Classes
from medseg.folds import tidy_layout, write_fold_curves
from medseg.hardware import pick_amp_dtype, pick_device
from medseg.inference import predict_class_probs, predict_probs
from medseg.losses import LossParams
from medseg.metrics import best_threshold
from medseg.model_card import Header, Threshold, load_checkpoint, write_ensemble
from medseg.model_loader import network_from_checkpoint
from medseg.networks import build_network
from medseg.oof import fold_of_rows, out_of_fold_probs
from medseg.params import AugmentParams, Section, TrainParams
from medseg.resume import RunState
from medseg.slices import SLICES, dataset_info, fold_count, fold_rows, load_arrays, read_sampling, slice_classes
from medseg.training import Recipe, RunDirs, TrainData, class_thresholds, train

log = logging.getLogger("medseg.train")


def load_train_data(fold: int, channels: int) -> TrainData:
    """Fold `fold`'s balanced training draws (the sampling rows of its training groups) and its val set."""
    sampling = read_sampling()
    sampling = sampling[(sampling["repeats"] > 0) & sampling["slice_id"].isin(fold_rows(fold, "train")["slice_id"])]
    train_images, train_masks = load_arrays(SLICES, sampling["slice_id"].tolist(), channels)
    val_images, val_masks = load_arrays(SLICES, fold_rows(fold, "val")["slice_id"].tolist(), channels)
    return TrainData(train_images, train_masks, sampling["repeats"].to_numpy(np.int64), val_images, val_masks)


def train_model(name: str, cfg: TrainParams, loss_cfg: LossParams, aug_cfg: AugmentParams,
                model_cfg: Section, is_main: bool) -> list[RunState]:
    """Train the model (or each of its K fold models, resuming in the fold a killed run was in)."""
    info = dataset_info()
    channels, folds, classes = info["channels"], fold_count(), slice_classes()
    read_sampling()  # checked against the split and its folds before any fold trains
    run = run_id(cfg.as_dict(), loss_cfg.as_dict(), aug_cfg.as_dict(), model_cfg.as_dict(), info) if folds > 1 else None
    states = []
    for fold in range(folds):
        data = load_train_data(fold, channels)
        torch.manual_seed(cfg.seed)
        model = build_network(name, channels, model_cfg.as_dict(), classes.channels)
        fold_or_none = None if folds == 1 else fold  # without folds the model folder has no fold_<k>/
        header = Header(name, model_cfg.as_dict(), channels, info, fold_or_none, folds if run else None, run)
        if fold_or_none is not None:
            log.info("%s: fold %d of %d", name, fold, folds)
        dirs = RunDirs(paths.model_dir(name, fold_or_none), paths.train_log_dir(name, fold_or_none))
        states.append(train(model, header, data, Recipe(cfg, loss_cfg, aug_cfg), dirs, keep_finished=folds > 1))
    if is_main:
        if folds > 1:
            threshold = out_of_fold_threshold(name, folds, channels, cfg, classes)
            write_ensemble(paths.model_dir(name), folds, threshold, run)
            cuts = threshold.per_class
            log.info("%s: out-of-fold threshold(s) %s for the %d-fold ensemble (%s)", name,
                     f"{threshold.value:.3f}" if cuts is None else ", ".join(f"{c:.3f}" for c in cuts), folds,
                     threshold.source)
        tidy_layout(name, folds)
        write_fold_curves(name, folds)
    return states


def run_id(*sections: dict[str, Any]) -> str:
    """What makes one k-fold training one run: its params sections, the split and the sampling table.
    Every fold checkpoint and ensemble.json carry it, so folds of two runs (a retrain killed after
    its first fold) are told apart when the folder is loaded (medseg.model_card)."""
    digest = hashlib.sha256(json.dumps(sections, sort_keys=True, default=str).encode())
    for table in (paths.SPLIT_CSV, paths.SAMPLING_CSV):
        digest.update(table.read_bytes())
    return digest.hexdigest()[:16]


def out_of_fold_threshold(name: str, folds: int, channels: int, cfg: TrainParams, classes: Classes) -> Threshold:
    """The ensemble's cut-off(s), from every fold model's predictions on its own val fold: the best
    pixel F1 threshold (binary), one per region, or none for exclusive classes (argmax); with where
    they came from."""
    device = pick_device(cfg.device)
    amp, exclusive = pick_amp_dtype(cfg.amp, device), classes.mode == "exclusive"
    best = [paths.model_dir(name, fold) / paths.BEST for fold in range(folds)]
    members = [network_from_checkpoint(load_checkpoint(path), path).to(device) for path in best]
    parts = [fold_rows(fold, "val") for fold in range(folds)]
    images, masks = load_arrays(SLICES, pd.concat(parts)["slice_id"].tolist(), channels)
    infer = (partial(predict_class_probs, device=device, exclusive=exclusive, batch_size=cfg.batch_size, amp_dtype=amp)
             if classes.multi else partial(predict_probs, device=device, batch_size=cfg.batch_size, amp_dtype=amp))
    probs = out_of_fold_probs(members, images, fold_of_rows([len(p) for p in parts]), infer)
    if not classes.multi:
        return Threshold(best_threshold(probs, masks, cfg.seed), "best pixel F1 on the out-of-fold predictions", True)
    if exclusive:
        return Threshold(0.5, "argmax over background and the classes (the threshold is not used)", True)
    return Threshold(0.5, "best pixel F1 of each region on the out-of-fold predictions", True,
                     class_thresholds(probs, masks, classes, cfg.seed))
