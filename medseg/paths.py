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


def raw_dir(dataset: str) -> Path:
    return RAW / dataset


def model_dir(model: str) -> Path:
    """best.pt and last.pt of one model."""
    return MODELS / model


def train_log_dir(model: str) -> Path:
    """The dvclive folder of one model's training."""
    return RESULTS / "train" / model


def stage_results(stage: str) -> Path:
    """results/<stage>/: the small git-tracked outputs (metrics.json, tables) of a stage."""
    return RESULTS / stage
