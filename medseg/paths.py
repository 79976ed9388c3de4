"""The only home of the pipeline's folder and file names (relative to the repository root)."""
from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")
RAW = Path("data/raw")
SLICES = Path("data/slices")
SPLIT_CSV = Path("data/split.csv")
SAMPLING_CSV = Path("data/train_sampling.csv")
MODELS = Path("data/models")
PREDICTIONS = Path("data/predictions")
RESULTS = Path("results")
PLOTS = RESULTS / "plots"
EVALUATE = RESULTS / "evaluate"
BENCH_JSON = RESULTS / "bench.json"
TIMINGS = RESULTS / "timings"  # run-to-run timings: neither DVC outputs nor metrics, so dvc.lock does not move


def raw_dir(dataset: str) -> Path:
    return RAW / dataset


# every file name under data/models/<model>/: the checkpoints, a k-fold model's ensemble record and fold folders
BEST, LAST, ENSEMBLE = "best.pt", "last.pt", "ensemble.json"


def fold_name(fold: int) -> str:
    """The folder of cross-validation fold `fold` (of a model's checkpoints and of its training log)."""
    return f"fold_{fold}"


def model_dir(model: str, fold: int | None = None) -> Path:
    """best.pt and last.pt of one model, or of its cross-validation fold `fold`."""
    return MODELS / model if fold is None else MODELS / model / fold_name(fold)


def ensemble_json(model: str) -> Path:
    """The fold count and out-of-fold threshold of a k-fold model (its folder is then the model)."""
    return MODELS / model / ENSEMBLE


def train_log_dir(model: str, fold: int | None = None) -> Path:
    """The dvclive folder of one model's training, or of its fold `fold`."""
    return RESULTS / "train" / model if fold is None else RESULTS / "train" / model / fold_name(fold)


def fold_curves(model: str) -> Path:
    """Every fold's training curves of one model in one table (what `dvc plots show` draws per fold)."""
    return RESULTS / "train" / model / "folds.tsv"


def stage_results(stage: str) -> Path:
    """results/<stage>/: the small git-tracked outputs (metrics.json, tables) of a stage."""
    return RESULTS / stage
