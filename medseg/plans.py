"""The plan: what every `auto` param resolves to for the dataset at hand and the machine class, and
why (nnU-Net's fingerprint -> plans, reduced to the knobs a 2D pipeline has).

Two moments. `convert` knows the dataset name and the profile before it reads a slice, so it
resolves `convert.size`; after converting it takes the fingerprint of the slices (cases, slices,
foreground shares, channels) and writes data/slices/plans.json: the profile, the fingerprint and
every planned value with the reason for it. Each later stage replaces the `auto` values of its own
section from that file (`apply`) and logs what it took; `evaluate` copies the plan into
summary.md. The per-dataset defaults live in medseg.datasets.registry (DATASET_PLANS), beside the
readers (this module imports no reader, so the stages after convert do not depend on them); an
explicit value in params.yaml always wins.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from medseg import paths
from medseg.errors import MedsegError
from medseg.outputs import write_json
from medseg.params import Section

log = logging.getLogger("medseg.plans")

AUTO = "auto"
PROFILES = ("cpu", "gpu")
PLANS_FILE = "plans.json"
P = TypeVar("P", bound=Section)
# the params that take `auto` and are planned here ("section.key"); evaluate's `auto`s are chosen on val instead
PLANNED = ("convert.size", "convert.normalize", "split.fractions", "balance.neg_keep", "balance.pos_repeat", "train.epochs",
           "train.patience", "train.batch_size", "train.select")
REAL_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


@dataclass(frozen=True)
class DatasetPlan:
    """One dataset's planned values. `size` and `epochs` per profile (cpu, gpu); `fractions` None
    means the real-data rule (REAL_FRACTIONS); `why` says where the numbers come from."""

    size: dict[str, int]
    epochs: dict[str, int]
    neg_keep: dict[str, float]
    pos_repeat: dict[str, float]
    patience: dict[str, int]
    why: str
    fractions: dict[str, float] | None = None
    normalize: str = "none"  # convert.normalize, for readers that have the choice (DatasetFormat.normalizes)
    normalize_why: str = "the files' own intensity scale"
    batch_size: dict[str, int] = field(default_factory=lambda: {"cpu": 16, "gpu": 16})
    select: dict[str, str] = field(default_factory=lambda: {"cpu": "best", "gpu": "best"})


def resolve_profile(profile: str) -> tuple[str, str]:
    """`convert.profile` as a machine class and the reason: auto -> gpu when torch sees a CUDA device."""
    if profile != AUTO:
        return profile, "params.yaml convert.profile"
    import torch

    if torch.cuda.is_available():
        return "gpu", f"auto: a CUDA device ({torch.cuda.get_device_name(0)})"
    return "cpu", "auto: no CUDA device"


def plan_size(plan: DatasetPlan, dataset: str, convert_size: Any, profile: str) -> tuple[int, str]:
    """convert.size: the explicit value, else the dataset's planned side for the profile."""
    if convert_size != AUTO:
        return int(convert_size), "params.yaml convert.size"
    return plan.size[profile], f"{dataset} plan for the {profile} profile ({plan.why})"


def plan_normalize(plan: DatasetPlan, dataset: str, convert_normalize: str) -> tuple[str, str]:
    """convert.normalize: the explicit value, else the dataset's planned one."""
    if convert_normalize != AUTO:
        return convert_normalize, "params.yaml convert.normalize"
    return plan.normalize, f"{dataset} plan ({plan.normalize_why})"


def fingerprint(manifest: pd.DataFrame, channels: int, size: int) -> dict[str, Any]:
    """What the plan (and a reader of summary.md) needs to know of the converted data."""
    per_group = manifest.groupby("group")["fg_pixels"]
    positive = manifest["fg_pixels"] > 0
    return {"cases": int(manifest["group"].nunique()), "slices": int(len(manifest)),
            "positive_slices": int(positive.sum()), "positive_cases": int((per_group.sum() > 0).sum()),
            "slices_per_case_median": float(manifest.groupby("group").size().median()),
            "foreground_share": float(manifest["fg_pixels"].sum() / (len(manifest) * size * size)),
            "channels": int(channels), "size": int(size),
            "original_size_median": [int(manifest["height"].median()), int(manifest["width"].median())]}


def build_plan(plan: DatasetPlan, dataset: str, profile: str, profile_why: str, converted: dict[str, dict[str, Any]],
               prints: dict[str, Any]) -> dict[str, Any]:
    """Every planned value with its reason, for `dataset` (whose DatasetPlan is `plan`) under `profile`;
    `converted` holds what convert resolved before reading ({"convert.size": {"value", "why"}, ...})."""
    if plan.fractions is not None:
        fractions, frac_why = plan.fractions, f"{dataset} plan ({plan.why})"
    else:
        fractions = REAL_FRACTIONS
        frac_why = (f"real data: most of the {prints['cases']} cases train (70 %), 20 % are held out for a per-case "
                    "test score with a CI, 10 % select the model, threshold and post-processing; "
                    "or split.folds >= 2 pools train and val into folds")
    why = f"{dataset} plan for the {profile} profile ({plan.why})"
    values = {**converted,
              "split.fractions": {"value": fractions, "why": frac_why},
              **{f"balance.{k}": {"value": getattr(plan, k)[profile], "why": why} for k in ("neg_keep", "pos_repeat")},
              **{f"train.{k}": {"value": getattr(plan, k)[profile], "why": why} for k in ("epochs", "patience", "batch_size", "select")}}
    return {"dataset": dataset, "profile": profile, "profile_why": profile_why, "fingerprint": prints,
            "values": values}


def write_plan(slices: Path, plan: dict[str, Any]) -> None:
    write_json(slices / PLANS_FILE, plan)


def read_plan(slices: Path = paths.SLICES) -> dict[str, Any]:
    path = slices / PLANS_FILE
    if not path.exists():
        raise MedsegError(f"{path}: missing; run the convert stage first (it plans the `auto` params)")
    try:
        plan = json.loads(path.read_text())
        plan["values"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MedsegError(f"{path}: not a medseg plan ({type(err).__name__}); run the convert stage again") from err
    return plan


def apply(cfg: P, slices: Path = paths.SLICES) -> P:
    """`cfg` (a validated params section) with each `auto` that the plan in `slices` owns replaced by
    the planned value; each replacement logged with its reason. Explicit values are kept."""
    if not _auto_keys(cfg):
        return cfg
    return resolve(cfg, read_plan(slices), slices / PLANS_FILE)


def _auto_keys(cfg: Section) -> list[str]:
    return [key for key in PLANNED if key.startswith(cfg.NAME + ".") and getattr(cfg, key.split(".", 1)[1]) == AUTO]


def resolve(cfg: P, plan: dict[str, Any], source: Path | str = PLANS_FILE) -> P:
    """`cfg` with its `auto` values taken from `plan` (read from `source`, named in errors); the rules
    across keys are checked again, now that a planned value can take part."""
    planned = {}
    for key in _auto_keys(cfg):
        leaf = key.split(".", 1)[1]
        if key not in plan["values"]:
            raise MedsegError(f"{source}: plans no value for {key}; run the convert stage again")
        planned[leaf] = plan["values"][key]["value"]
        log.info("%s: auto -> %s (%s)", key, planned[leaf], plan["values"][key]["why"])
    return replace(cfg, **planned)


