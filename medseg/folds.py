"""K-fold models beyond their card: the mean of the fold probabilities, tidying what a run of another
fold count left in a model's folders, and one table of every fold's training curves.

What a k-fold folder holds (fold_<k>/best.pt, ensemble.json) is written and read by medseg.model_card.
"""
from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from medseg import paths
from medseg.model_card import ENSEMBLE, FOLD_DIR
from medseg.outputs import write_atomic

log = logging.getLogger(__name__)

CURVES = ("train_loss", "val_loss", "val_dice")


def mean_probs(per_model: Iterable[np.ndarray]) -> np.ndarray:
    """The ensemble's probability: the mean of its members' (nnU-Net's fold ensembling), summed as each
    member's arrives, so at most two arrays are held whatever the fold count (stacking K float32 arrays
    took K times the memory: ≈76 GB for SIIM at 512 px, 5 folds). The same bytes as np.mean over the
    stack: numpy reduces the outer axis by the same float32 additions in the same order."""
    total, count = None, 0
    for probs in per_model:
        total = probs if total is None else (total + probs if count == 1 else np.add(total, probs, out=total))
        count += 1
    if total is None:
        raise ValueError("mean_probs of no member")
    return total if count == 1 else np.true_divide(total, count, dtype=np.float32)


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
