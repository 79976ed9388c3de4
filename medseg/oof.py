"""Out-of-fold predictions: each row scored by the fold model that did not train on it. One helper for
the train stage (the ensemble's threshold) and evaluate (post-processing and the CV estimate)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def fold_of_rows(sizes: list[int]) -> np.ndarray:
    """The fold index of each row when the folds' rows are concatenated in fold order."""
    return np.repeat(np.arange(len(sizes)), sizes)


def out_of_fold_probs(members: Sequence[Any], images: np.ndarray, fold: np.ndarray,
                      infer: Callable[[Any, np.ndarray], np.ndarray]) -> np.ndarray:
    """Each row's probability from the member that did not train on it (fold k -> member k), each
    member predicting its own rows in one call; with one member (no folds), its probabilities on
    every row. Several classes: (N, channels, H, W)."""
    if len(members) == 1:
        return infer(members[0], images)
    probs = None
    for k, model in enumerate(members):
        rows = np.flatnonzero(fold == k)
        if len(rows):
            part = infer(model, images[rows])
            probs = np.empty((len(images), *part.shape[1:]), np.float32) if probs is None else probs
            probs[rows] = part
    return probs
