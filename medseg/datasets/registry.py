"""The only place that maps a dataset name to its reader and phantom writer, and the schema of
the `dataset` params section whose `name` it validates."""
from __future__ import annotations

import importlib
from types import ModuleType

from medseg.errors import MedsegError
from medseg.params import Spec, integer

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


DATASET_PARAMS = {
    "name": Spec(str, tuple(DATASETS)),
    "source": Spec(str),
    "phantom": {"cases": integer(3, 10_000), "depth": integer(4, 1_000), "size": integer(16, 2_048),
                "seed": integer(0)},
}
