"""Optional post-processing of binary predictions: connected components per slice (opencv) or per
case volume (scipy.ndimage)."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage


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


def clean_volumes(masks: np.ndarray, slices: pd.DataFrame, min_volume: int, largest_only: bool) -> np.ndarray:
    """Per case (`group`), its slices re-stacked in `index` order: drop 3D connected components
    (26-connected, scipy.ndimage) smaller than `min_volume` voxels; optionally keep only the largest.

    A lesion is one object across slices, so a false positive that is small in 3D but spans a few
    pixels on each of several slices is judged as the one object it is (nnU-Net's post-processing
    works on the volume too); a case of one slice (ISIC, SIIM) is the 2D rule."""
    if min_volume <= 0 and not largest_only:
        return masks
    out = np.zeros_like(masks, dtype=bool)
    for _, part in slices.reset_index(drop=True).groupby("group", sort=False):
        order = part.sort_values("index").index.to_numpy()
        labels, count = ndimage.label(masks[order], structure=np.ones((3, 3, 3), bool))
        if count == 0:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.flatnonzero(sizes >= max(min_volume, 1)) + 1
        if largest_only and keep.size:
            keep = np.array([keep[np.argmax(sizes[keep - 1])]])
        out[order] = np.isin(labels, keep)
    return out


def clean_predictions(binary: np.ndarray, slices: pd.DataFrame, min_area: int, largest_component: bool,
                      min_volume: int, largest_volume: bool) -> np.ndarray:
    """evaluate's post-processing chain: per slice (min_area, largest_component), then per case volume
    (min_volume, largest_volume); `slices` are the rows of `binary` with their group and index."""
    return clean_volumes(clean_stack(binary, min_area, largest_component), slices, min_volume, largest_volume)
