"""K-fold models on disk: which checkpoints a model folder holds, the ensemble's out-of-fold
threshold, the mean of the fold probabilities, and one table of every fold's training curves.

A k-fold model folder is data/models/<model>/ with fold_<k>/best.pt (k = 0..K-1) and
ensemble.json; a plain model is its best.pt. Everything that loads a model for prediction goes
through `checkpoint_paths`, so predict and evaluate read the two layouts the same way.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medseg import paths
from medseg.errors import MedsegError
from medseg.outputs import write_atomic, write_json

ENSEMBLE = "ensemble.json"
CURVES = ("train_loss", "val_loss", "val_dice")


def read_ensemble(folder: Path) -> dict[str, Any]:
    """ensemble.json of a k-fold model folder: folds, threshold and where the threshold came from."""
    path = folder / ENSEMBLE
    try:
        spec = json.loads(path.read_text())
        folds, threshold = int(spec["folds"]), float(spec["threshold"])
    except FileNotFoundError as err:
        raise MedsegError(f"{path}: missing; run the train stage of this model to the end") from err
    except (ValueError, KeyError, TypeError) as err:
        raise MedsegError(f"{path}: not a medseg ensemble description ({type(err).__name__})") from err
    return {**spec, "folds": folds, "threshold": threshold}


def checkpoint_paths(model: Path) -> list[Path]:
    """The best.pt files that make up `model`: the file itself, a folder's best.pt, or a k-fold
    folder's fold_<k>/best.pt for every fold ensemble.json names (each must exist)."""
    if model.is_file() or model.suffix == ".pt":
        return [model]
    if not model.is_dir():
        raise MedsegError(f"{model}: no such checkpoint or model folder")
    if not (model / ENSEMBLE).exists():
        return [model / "best.pt"]
    found = [model / f"fold_{k}" / "best.pt" for k in range(read_ensemble(model)["folds"])]
    for path in found:
        if not path.exists():
            raise MedsegError(f"{path}: missing from the k-fold model {model}; rerun its train stage")
    return found


def write_ensemble(folder: Path, folds: int, threshold: float, source: str) -> None:
    write_json(folder / ENSEMBLE, {"folds": folds, "threshold": threshold, "threshold_source": source})


def mean_probs(per_model: list[np.ndarray]) -> np.ndarray:
    """The ensemble's probability: the mean of its members' (nnU-Net's fold ensembling)."""
    return np.mean(np.stack(per_model), axis=0, dtype=np.float32) if len(per_model) > 1 else per_model[0]


def tidy_layout(model: str, folds: int) -> None:
    """Remove what another `split.folds` left in this model's persisted folders (their outputs
    persist across runs), once the run of this fold count has written its own."""
    fold_dirs = {f"fold_{k}" for k in range(folds)} if folds > 1 else set()
    model_keep = fold_dirs | {ENSEMBLE} if folds > 1 else {"best.pt", "last.pt"}
    for entry in _entries(paths.model_dir(model)):
        if entry.name not in model_keep:
            _remove(entry)
    log_keep = fold_dirs | {paths.fold_curves(model).name}
    for entry in _entries(paths.train_log_dir(model)):
        if (entry.name not in log_keep) if folds > 1 else entry.name.startswith("fold_"):
            _remove(entry)


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.exists() else []


def _remove(entry: Path) -> None:
    if entry.is_dir():
        shutil.rmtree(entry)
    else:
        entry.unlink()


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
