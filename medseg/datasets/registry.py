"""The only place that maps a dataset name to its reader and phantom writer, and the schema of
the `dataset` params section whose `name` it validates."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

from medseg.classes import MODES, binary_labels, from_params
from medseg.datasets import ReaderConfig
from medseg.errors import MedsegError
from medseg.params import ConvertParams, Section, Spec, integer, key, seed
from medseg.plans import DatasetPlan, plan_normalize, plan_size, resolve_profile

@dataclass(frozen=True)
class DatasetFormat:
    """Where a dataset's reader (and, for a phantom, its writer) lives, and what the reader can do:
    `label_volumes` when its masks come from label volumes or maps (so dataset.labels and dataset.classes
    select the foreground), `normalizes` when its cases are stacks of 2D files that
    `convert.normalize: volume` rescales as one volume. The modules are imported on first use."""

    reader: str
    phantom: str | None = None
    label_volumes: bool = False
    normalizes: bool = False


_MSD, _LGG = "medseg.datasets.msd", "medseg.datasets.lgg"
_ISIC, _SIIM, _FOLDER = "medseg.datasets.isic", "medseg.datasets.siim", "medseg.datasets.folder"
DATASETS: dict[str, DatasetFormat] = {
    "phantom": DatasetFormat(_MSD, "medseg.datasets.phantom_msd", label_volumes=True),
    "msd": DatasetFormat(_MSD, label_volumes=True),  # any Decathlon-layout task, from a local folder
    "lung": DatasetFormat("medseg.datasets.lung", label_volumes=True),  # Task06: the msd reader with its count
    "lgg": DatasetFormat(_LGG, normalizes=True),
    "phantom_lgg": DatasetFormat(_LGG, "medseg.datasets.phantom_lgg", normalizes=True),
    "isic": DatasetFormat(_ISIC),
    "phantom_isic": DatasetFormat(_ISIC, "medseg.datasets.phantom_isic"),
    "siim": DatasetFormat(_SIIM),
    "phantom_siim": DatasetFormat(_SIIM, "medseg.datasets.phantom_siim"),
    # any 2D images/ + masks/ folder; with a groups.csv, `volume` rescales each group as one volume
    "folder": DatasetFormat(_FOLDER, label_volumes=True, normalizes=True),
    "phantom_folder": DatasetFormat(_FOLDER, "medseg.datasets.phantom_folder", label_volumes=True,
                                    normalizes=True),  # label maps: organ + lesion
}


def taking(flag: str) -> str:
    """The dataset names whose format has `flag` (label_volumes, normalizes), for an error line."""
    return ", ".join(n for n, f in DATASETS.items() if getattr(f, flag))


def _per(cpu: Any, gpu: Any) -> dict[str, Any]:
    return {"cpu": cpu, "gpu": gpu}


# What `auto` params resolve to per dataset (medseg.plans). The cpu profile is sized for a 2-core CPU:
# the whole four-model pipeline within about an hour (docs/how-to/real-datasets.md); the gpu profile is the
# papers' resolution and schedule. Phantoms keep the values the defaults always had.
_PHANTOM = DatasetPlan(size=_per(96, 96), epochs=_per(12, 12), neg_keep=_per(0.3, 0.3), pos_repeat=_per(1.5, 1.5),
                       patience=_per(5, 5), fractions={"train": 0.22, "val": 0.18, "test": 0.6},
                       why="the phantom's fixed recipe: most volumes in test for narrow per-case CIs")
DATASET_PLANS: dict[str, DatasetPlan] = {
    "phantom": _PHANTOM, "phantom_lgg": _PHANTOM, "phantom_isic": _PHANTOM, "phantom_siim": _PHANTOM,
    "phantom_folder": _PHANTOM,
    "lgg": DatasetPlan(size=_per(96, 256), epochs=_per(32, 100), neg_keep=_per(0.1, 1.0), pos_repeat=_per(1.0, 1.0),
                       patience=_per(0, 20), batch_size=_per(8, 16), select=_per("final", "best"), normalize="volume",
                       normalize_why="the set's 8-bit files keep each scanner's brightness; each patient is rescaled "
                                     "to its own MR range, as Buda et al. 2019 did (measured: docs/realdata.md)",
                       why="cpu: measured by 5-fold CV on 40 real patients, docs/realdata.md; gpu: Buda et al. 2019, 256 px"),
    "isic": DatasetPlan(size=_per(96, 256), epochs=_per(8, 60), neg_keep=_per(1.0, 1.0), pos_repeat=_per(1.0, 1.0),
                        patience=_per(4, 15),
                        why="every image holds a lesion; cpu: 8 epochs of ~1,800 images; gpu: 256 px, the usual ISIC 2018 training size"),
    "siim": DatasetPlan(size=_per(128, 512), epochs=_per(4, 40), neg_keep=_per(0.1, 0.15), pos_repeat=_per(1.0, 1.5),
                        patience=_per(3, 10),
                        why="78 % of the images are empty and the targets small; gpu: 512 px, half the radiographs' 1,024"),
    "lung": DatasetPlan(size=_per(128, 512), epochs=_per(6, 100), neg_keep=_per(0.05, 0.1), pos_repeat=_per(1.0, 1.0),
                        patience=_per(4, 20),
                        why="few slices hold tumour; gpu: the CT's own 512 px"),
    "folder": DatasetPlan(size=_per(128, 256), epochs=_per(12, 100), neg_keep=_per(0.3, 1.0),
                          pos_repeat=_per(1.0, 1.0), patience=_per(12, 20),
                          why="a user's own 2D set of unknown content: the CPU's resolution and schedule of the other "
                              "2D sets, every image with foreground and some without"),
    "msd": DatasetPlan(size=_per(128, 256), epochs=_per(8, 100), neg_keep=_per(0.1, 0.3), pos_repeat=_per(1.0, 1.0),
                       patience=_per(4, 20), why="any Decathlon task; volumes hold many slices without foreground"),
}


def dataset_plan(name: str) -> DatasetPlan:
    format_for(name)  # an unknown name is refused in one line
    return DATASET_PLANS[name]


def planned_size(dataset: str, convert: ConvertParams) -> int:
    """The slice side `convert` writes for `dataset` under this `convert` section."""
    return plan_size(dataset_plan(dataset), dataset, convert.size, resolve_profile(convert.profile)[0])[0]


def convert_choices(dataset: str, convert: ConvertParams, profile: str) -> dict[str, dict[str, Any]]:
    """What `convert` resolves before it reads a slice, each as {"value", "why"}: `convert.size`, and
    `convert.normalize` where the reader has the choice (normalizes); elsewhere an explicit
    `volume` is refused (those readers normalise by modality themselves, or read 2D images one by one)."""
    plan = dataset_plan(dataset)
    size, size_why = plan_size(plan, dataset, convert.size, profile)
    chosen = {"convert.size": {"value": size, "why": size_why}}
    if DATASETS[dataset].normalizes:
        normalize, normalize_why = plan_normalize(plan, dataset, convert.normalize)
        chosen["convert.normalize"] = {"value": normalize, "why": normalize_why}
    elif convert.normalize == "volume":
        raise MedsegError(f"params.yaml: convert.normalize=volume applies to datasets of 2D slice files "
                          f"({taking('normalizes')}); "
                          f"{dataset} is read with its own intensity rule: set it to auto or none")
    return chosen


def format_for(name: str) -> ModuleType:
    """The reader module of dataset `name` (phantoms use the reader of the format they mimic)."""
    if name not in DATASETS:
        raise MedsegError(f"params.yaml: dataset.name={name!r} is not allowed; choose one of: {', '.join(DATASETS)}")
    return importlib.import_module(DATASETS[name].reader)


def phantom_writer(name: str) -> ModuleType | None:
    """The phantom module that generates dataset `name`, or None for a real dataset."""
    writer = DATASETS[name].phantom if name in DATASETS else None
    return importlib.import_module(writer) if writer else None


def reader_config(dataset: DatasetParams, convert: ConvertParams, chosen: dict[str, dict[str, Any]]) -> ReaderConfig:
    """What a reader's read_case takes: the `convert` values as `chosen` resolved them, plus
    `dataset.labels` and the classes (medseg.classes), which only formats with label volumes or maps
    (label_volumes) accept: the others' masks are binary already."""
    classes = from_params(dataset.classes, dataset.class_mode, dataset.labels)
    labels = binary_labels(dataset.classes, dataset.labels)
    format_for(dataset.name)  # an unknown name is refused in one line
    if classes.multi and not DATASETS[dataset.name].label_volumes:
        raise MedsegError(f"params.yaml: dataset.classes applies to label volumes and maps ({taking('label_volumes')}); "
                          f"{dataset.name} masks are binary images: set it to null")
    if labels is not None:
        if not labels:
            raise MedsegError("params.yaml: dataset.labels=[] selects no foreground; list the label values "
                              "(e.g. [1, 2, 4]) or use null for a binary label")
        if not DATASETS[dataset.name].label_volumes:
            raise MedsegError(f"params.yaml: dataset.labels={labels} applies to label volumes and maps "
                              f"({taking('label_volumes')}); "
                              f"{dataset.name} masks are binary images: set it to null")
    return ReaderConfig(size=chosen["convert.size"]["value"], window_level=convert.window_level,
                        window_width=convert.window_width,
                        normalize=chosen.get("convert.normalize", {"value": "none"})["value"], labels=labels,
                        classes=classes)


@dataclass(frozen=True)
class DatasetParams(Section):
    """The `dataset` params section; `name` is checked against DATASETS here."""

    NAME: ClassVar[str] = "dataset"
    name: str = key(Spec(str, tuple(DATASETS)), "the dataset: a phantom (offline) or a real set's reader")
    source: str = key(Spec(str), "kaggle, or a local folder or archive of the raw dataset")
    labels: list[int] | None = key(Spec(list, nullable=True, items=integer(1, 65_535)),
                                   "raw label values unioned into the binary foreground; null: every non-zero "
                                   "value")
    classes: dict[str, list[int]] | None = key(Spec(dict, nullable=True), "class name -> raw label values (two or "
                                               "more: multi-class); null: binary")
    class_mode: str = key(Spec(str, MODES), "exclusive (softmax, one label per pixel) or regions (one sigmoid "
                          "channel per overlapping region)")
    phantom: dict[str, int] = key({"cases": integer(3, 10_000), "depth": integer(4, 1_000),
                                   "size": integer(16, 2_048), "seed": seed()},
                                  "the offline phantom's volumes: cases, slices per volume, side in pixels, seed")
