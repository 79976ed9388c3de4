"""Dataset formats. Each format module lists the cases in data/raw/<dataset>/ and reads them as
2D slices; this registry is the only place that maps a dataset name to its reader.

A format module provides:
    CHANNELS: int                               image channels it yields
    EXPECTED: dict[str, int]                    counts of the full real dataset ({} for none)
    list_cases(raw: Path) -> list[CaseRef]
    read_case(case: CaseRef, cfg: dict) -> Iterator[Slice]   cfg = the `convert` params section
    count_summary(cases: list[CaseRef]) -> dict[str, int]    same keys as EXPECTED
A phantom module provides write(root: Path, cases: int, depth: int, size: int, seed: int),
writing the raw layout of the format it mimics into `root`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from medseg.errors import MedsegError


@dataclass(frozen=True)
class CaseRef:
    """One patient/volume/image to convert: its group id (no PHI) and the raw files it comes from.

    `extra` carries format-specific picklable data (e.g. SIIM's RLE strings)."""

    case_id: str
    group: str
    image: Path
    label: Path | None
    extra: tuple = field(default=())


@dataclass
class Slice:
    """One 2D slice in display orientation: image (H, W, C) float in [0, 1], mask (H, W) bool."""

    index: int
    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float] | None  # row mm, col mm, slice mm


# dataset name -> (reader module, phantom writer module or None)
DATASETS: dict[str, tuple[str, str | None]] = {
    "phantom": ("medseg.datasets.msd", "medseg.datasets.phantom_msd"),
    "lung": ("medseg.datasets.msd", None),
    "lgg": ("medseg.datasets.lgg", None),
    "phantom_lgg": ("medseg.datasets.lgg", "medseg.datasets.phantom_lgg"),
    "isic": ("medseg.datasets.isic", None),
    "phantom_isic": ("medseg.datasets.isic", "medseg.datasets.phantom_isic"),
    "siim": ("medseg.datasets.siim", None),
    "phantom_siim": ("medseg.datasets.siim", "medseg.datasets.phantom_siim"),
}


def format_for(name: str) -> ModuleType:
    """The reader module of dataset `name` (phantoms use the reader of the format they mimic)."""
    if name not in DATASETS:
        raise MedsegError(f"params.yaml: dataset.name={name!r} is not allowed; choose one of: {', '.join(DATASETS)}")
    return importlib.import_module(DATASETS[name][0])


def phantom_writer(name: str) -> ModuleType | None:
    """The phantom module that generates dataset `name`, or None for a real dataset."""
    writer = DATASETS[name][1] if name in DATASETS else None
    return importlib.import_module(writer) if writer else None
