"""The only place that maps a dataset name to its reader and phantom writer, and the schema of
the `dataset` params section whose `name` it validates."""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from medseg.errors import MedsegError
from medseg.params import Spec, integer

# dataset name -> (reader module, phantom writer module or None)
DATASETS: dict[str, tuple[str, str | None]] = {
    "phantom": ("medseg.datasets.msd", "medseg.datasets.phantom_msd"),
    "msd": ("medseg.datasets.msd", None),  # any Decathlon-layout task, from a local folder
    "lung": ("medseg.datasets.lung", None),  # the Task06 preset: the msd reader with its case count
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


def reader_config(dataset: dict[str, Any], convert: dict[str, Any]) -> dict[str, Any]:
    """What a reader's read_case takes: the `convert` section plus `dataset.labels`, which only
    formats with label volumes (LABEL_VOLUMES) accept: the others' masks are binary already."""
    labels = dataset["labels"]
    if labels is not None:
        if not labels:
            raise MedsegError("params.yaml: dataset.labels=[] selects no foreground; list the label values "
                              "(e.g. [1, 2, 4]) or use null for a binary label")
        if not getattr(format_for(dataset["name"]), "LABEL_VOLUMES", False):
            takes = ", ".join(n for n in DATASETS if getattr(format_for(n), "LABEL_VOLUMES", False))
            raise MedsegError(f"params.yaml: dataset.labels={labels} applies to label volumes ({takes}); "
                              f"{dataset['name']} masks are binary images: set it to null")
    return {**convert, "labels": labels}


DATASET_PARAMS = {
    "name": Spec(str, tuple(DATASETS)),
    "source": Spec(str),
    "labels": Spec(list, nullable=True, items=integer(1, 65_535)),
    "phantom": {"cases": integer(3, 10_000), "depth": integer(4, 1_000), "size": integer(16, 2_048),
                "seed": integer(0)},
}
