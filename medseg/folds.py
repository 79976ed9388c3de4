"""K-fold models on disk: which checkpoints a model folder holds, the ensemble's out-of-fold
threshold, the mean of the fold probabilities, and one table of every fold's training curves.

A k-fold model folder is data/models/<model>/ with fold_<k>/best.pt (k = 0..K-1) and
ensemble.json; a plain model is its best.pt. Everything that loads a model for prediction goes
through `checkpoint_paths`, so predict and evaluate read the two layouts the same way.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medseg import paths
from medseg.errors import MedsegError
from medseg.outputs import write_atomic, write_json
from medseg.params import is_count, is_probability

log = logging.getLogger(__name__)

ENSEMBLE = paths.ENSEMBLE
MAX_FOLDS = 20  # split.folds' largest value: an edited fold count is refused before any path is listed
CURVES = ("train_loss", "val_loss", "val_dice")


def read_ensemble(folder: Path) -> dict[str, Any]:
    """ensemble.json of a k-fold model folder: folds (>= 2), threshold (in [0, 1]), a regions model's
    class_thresholds and where the threshold came from, each checked: an edited file is one line naming it."""
    path = folder / ENSEMBLE
    try:
        spec = json.loads(path.read_text())
        folds, threshold = spec["folds"], spec["threshold"]
    except FileNotFoundError as err:
        raise MedsegError(f"{path}: missing; run the train stage of this model to the end") from err
    except (ValueError, KeyError, TypeError) as err:
        raise MedsegError(f"{path}: not a medseg ensemble description ({type(err).__name__})") from err
    if not is_count(folds) or not 2 <= folds <= MAX_FOLDS:
        raise MedsegError(f"{path}: folds={folds!r} is not a fold count (an integer in [2, {MAX_FOLDS}], as split.folds)")
    if not is_probability(threshold):
        raise MedsegError(f"{path}: threshold={threshold!r} is not a number in [0, 1]")
    cuts = spec.get("class_thresholds")
    if cuts is not None and not (isinstance(cuts, list) and cuts and all(map(is_probability, cuts))):
        raise MedsegError(f"{path}: class_thresholds={cuts!r} is not a list of numbers in [0, 1]")
    return {**spec, "folds": folds, "threshold": float(threshold)}


def fold_folders(model: Path) -> list[int]:
    """The k of every fold_<k>/ in `model` that holds a best.pt."""
    return sorted(int(p.name[5:]) for p in model.iterdir() if FOLD_DIR.fullmatch(p.name) and (p / paths.BEST).is_file())


def checkpoint_paths(model: Path) -> list[Path]:
    """The best.pt files that make up `model`: the file itself, a folder's best.pt, or a k-fold
    folder's fold_<k>/best.pt for every fold ensemble.json names (each must exist)."""
    if model.is_file() or model.suffix == ".pt":
        return [model]
    if not model.is_dir():
        raise MedsegError(f"{model}: no such checkpoint or model folder")
    folds = fold_folders(model)
    if not (model / ENSEMBLE).exists():
        if folds and not (model / paths.BEST).exists():
            raise MedsegError(f"{model}: holds fold_{folds[0]}..fold_{folds[-1]} but no {ENSEMBLE} (its k-fold training "
                              "did not finish); run its train stage again")
        return [model / paths.BEST]
    count = read_ensemble(model)["folds"]
    found = [model / paths.fold_name(k) / paths.BEST for k in range(count)]
    for path in found:
        if not path.exists():
            raise MedsegError(f"{path}: missing from the k-fold model {model}; rerun its train stage")
    if folds != list(range(count)):
        raise MedsegError(f"{model / ENSEMBLE}: names {count} folds but the folder holds fold_"
                          f"{', fold_'.join(map(str, folds))}; run its train stage again")
    return found


def write_ensemble(folder: Path, folds: int, threshold: float, source: str, run: str | None = None,
                   class_thresholds: list[float] | None = None) -> None:
    """ensemble.json; `run` is the run id every fold checkpoint of this training carries;
    `class_thresholds`: one out-of-fold cut-off per region of a regions model."""
    write_json(folder / ENSEMBLE, {"folds": folds, "threshold": threshold, "threshold_source": source,
                                   **({"run": run} if run else {}),
                                   **({"class_thresholds": class_thresholds} if class_thresholds else {})})


def mean_probs(per_model: list[np.ndarray]) -> np.ndarray:
    """The ensemble's probability: the mean of its members' (nnU-Net's fold ensembling)."""
    return np.mean(np.stack(per_model), axis=0, dtype=np.float32) if len(per_model) > 1 else per_model[0]


FOLD_DIR = re.compile(r"fold_\d+")
CHECKPOINTS = (paths.BEST, paths.LAST)
LIVE = ("metrics.json", "plots")  # what dvclive writes into a run's log folder (medseg.training)


def tidy_layout(model: str, folds: int) -> None:
    """Remove what a run of another `split.folds` left in this model's persisted folders (their
    outputs persist across runs), once the run of this fold count has written its own. Only what
    medseg writes there is removed, by name (checkpoints, ensemble.json, fold_<k>/, dvclive's files);
    anything else is left where it is and named in a warning."""
    fold_dirs = {paths.fold_name(k) for k in range(folds)} if folds > 1 else set()
    model_keep = fold_dirs | {ENSEMBLE} if folds > 1 else set(CHECKPOINTS)
    _tidy(paths.model_dir(model), model_keep, (*CHECKPOINTS, ENSEMBLE), CHECKPOINTS)
    log_keep = fold_dirs | {paths.fold_curves(model).name} if folds > 1 else {*LIVE, paths.fold_curves(model).name}
    _tidy(paths.train_log_dir(model), log_keep, (*LIVE, paths.fold_curves(model).name), LIVE)


def _tidy(folder: Path, keep: set[str], ours: tuple[str, ...], ours_in_fold: tuple[str, ...]) -> None:
    """Remove the entries of `folder` that medseg writes (`ours`, and fold_<k>/ holding `ours_in_fold`)
    and that this layout does not `keep`; warn about anything else."""
    foreign = []
    for entry in sorted(folder.iterdir()) if folder.exists() else []:
        if entry.name in keep:
            continue
        if FOLD_DIR.fullmatch(entry.name) and entry.is_dir():
            foreign += _tidy_fold(entry, ours_in_fold)
        elif entry.name in ours:
            _remove(entry)
        else:
            foreign.append(entry)
    if foreign:
        log.warning("%s: left %s in place (not written by medseg; a model folder holds only what training "
                    "writes: keep exports and notes elsewhere)", folder, ", ".join(str(p) for p in foreign))


def _remove(entry: Path) -> None:
    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _tidy_fold(fold: Path, ours: tuple[str, ...]) -> list[Path]:
    """Remove a stale fold folder's medseg files, and the folder once empty; what else it holds."""
    rest = []
    for entry in sorted(fold.iterdir()):
        if entry.name in ours:
            _remove(entry)
        else:
            rest.append(entry)
    if not rest:
        fold.rmdir()
    return rest


def write_fold_curves(model: str, folds: int) -> pd.DataFrame:
    """results/train/<model>/folds.tsv: step, fold and the curves dvclive logged for each fold."""
    tables = []
    for fold in range(folds):
        log_dir = paths.train_log_dir(model, fold if folds > 1 else None) / "plots" / "metrics"
        merged = None
        for metric in CURVES:
            part = pd.read_csv(log_dir / f"{metric}.tsv", sep="\t")[["step", metric]]
            merged = part if merged is None else merged.merge(part, on="step")
        tables.append(merged.assign(fold=fold))
    table = pd.concat(tables, ignore_index=True)[["fold", "step", *CURVES]]
    write_atomic(paths.fold_curves(model), table.to_csv(sep="\t", index=False))
    return table
