"""Optional post-processing of binary predictions (opencv connected components)."""
from __future__ import annotations

import cv2
import numpy as np


def clean_mask(mask: np.ndarray, min_area: int, largest_only: bool) -> np.ndarray:
    """Drop 8-connected components smaller than `min_area` pixels; optionally keep only the largest."""
    if min_area <= 0 and not largest_only:
        return mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= max(min_area, 1)) + 1
    if largest_only and keep.size:
        keep = np.array([keep[np.argmax(areas[keep - 1])]])
    return np.isin(labels, keep)


def clean_stack(masks: np.ndarray, min_area: int, largest_only: bool) -> np.ndarray:
    return np.stack([clean_mask(m, min_area, largest_only) for m in masks]) if len(masks) else masks
