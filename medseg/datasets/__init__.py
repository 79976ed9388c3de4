"""Dataset formats. Each format module lists the cases in data/raw/<dataset>/ and reads them as
2D slices; medseg.datasets.registry is the only place that maps a dataset name to its reader.

A format module provides:
    CHANNELS: int                               image channels it yields (msd: of a one-modality
                                                task; convert records the channels written)
    EXPECTED: dict[str, int]                    counts of the full real dataset ({} for none)
    list_cases(raw: Path) -> list[CaseRef]
    read_case(case: CaseRef, cfg: ReaderConfig) -> Iterator[Slice]
    count_summary(cases: list[CaseRef]) -> dict[str, int]    same keys as EXPECTED
What a reader can do beyond that (label volumes or maps that `dataset.labels` selects from; stacks of
2D files that `convert.normalize: volume` rescales) is declared in medseg.datasets.registry.DATASETS.
A phantom module provides write(root: Path, cases: int, depth: int, size: int, seed: int),
writing the raw layout of the format it mimics into `root`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.classes import BINARY, Classes



@dataclass(frozen=True)
class ReaderConfig:
    """What a reader's read_case needs of params: the resolved `convert` values (never auto) and the
    foreground selection of `dataset` (built by medseg.datasets.registry.reader_config)."""

    size: int
    window_level: float
    window_width: float
    normalize: str = "none"  # "volume": a case's 2D slice files rescaled to its own range (readers that normalize)
    labels: list[int] | None = None  # raw label values of the binary foreground (readers of label volumes)
    classes: Classes = BINARY


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
    """One 2D slice in display orientation: image (H, W, C) float in [0, 1], mask (H, W) bool (or uint8
    class codes, medseg.classes, when the dataset has several classes)."""

    index: int
    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float] | None  # row mm, col mm, slice mm
    # the raw non-zero label values its label volume or map holds (readers of label volumes), so that
    # convert can tell a `dataset.labels` value that matches nothing
    label_values: tuple[int, ...] = ()
