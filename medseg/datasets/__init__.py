"""Dataset formats. Each format module lists cases in data/raw/<dataset>/ and reads them as 2D
slices; `format_for` is the only place that maps a dataset name to its reader."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from medseg.errors import MedsegError


@dataclass(frozen=True)
class CaseRef:
    """One patient/volume to convert: its group id and the raw files it comes from."""

    case_id: str
    group: str
    image: Path
    label: Path


@dataclass
class Slice:
    """One 2D slice in display orientation: image (H, W, C) float in [0, 1], mask (H, W) bool."""

    index: int
    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float] | None  # row mm, col mm, slice mm


def format_for(name: str) -> ModuleType:
    """The reader module of dataset `name` (phantoms use the reader of the format they mimic)."""
    from medseg.datasets import msd

    formats = {"phantom": msd}
    if name not in formats:
        raise MedsegError(f"params.yaml: dataset.name={name!r} has no reader; known: {', '.join(formats)}")
    return formats[name]
