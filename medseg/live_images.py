"""The fixed grid of val slices (image | truth | prediction) that each train stage logs through
dvclive every epoch, so `dvc plots show` and the VS Code DVC extension step through training."""
from __future__ import annotations

import numpy as np

GRID_SLICES = 4


def grid_slices(masks: np.ndarray, count: int = GRID_SLICES) -> np.ndarray:
    """The val slices shown: the `count` with the most foreground (ties by position), the same every epoch."""
    area = (masks.reshape(len(masks), -1) > 0).sum(1, dtype=np.int64)
    return np.argsort(-area, kind="stable")[:count]


def prediction_grid(images: np.ndarray, masks: np.ndarray, probs: np.ndarray, rows: np.ndarray,
                    threshold: float) -> np.ndarray:
    """uint8 RGB: one row per chosen slice, its image (grey unless RGB), truth and thresholded prediction."""
    strips = []
    for i in rows:
        image = images[i]
        rgb = image if image.shape[2] == 3 else np.repeat(image.mean(axis=2, keepdims=True), 3, axis=2)
        truth = np.repeat((masks[i] > 0)[..., None] * 255, 3, axis=2)
        pred = np.repeat((probs[i] >= threshold)[..., None] * 255, 3, axis=2)
        strips.append(np.concatenate([rgb, truth, pred], axis=1).astype(np.uint8))
    return np.concatenate(strips, axis=0)
