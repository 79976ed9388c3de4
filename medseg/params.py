"""Load and validate params.yaml sections.

The schema of a section lives here unless a registry owns its allowed values: `dataset` is
described in medseg.datasets.registry, `loss` in medseg.losses, `models.<name>` in
medseg.networks; the stage that reads such a section passes its schema. That keeps every stage's
imports (and so its DVC deps) to what it runs: validating `split` imports no network or reader.

Hand-written because the checks must name the exact dotted key, value and allowed set in one
line; a schema library would add a dependency for ~80 lines and word its errors its own way.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medseg import paths
from medseg.errors import MedsegError

PARAMS_FILE = paths.PARAMS


@dataclass(frozen=True)
class Spec:
    """Type and allowed values of one leaf key."""

    kind: type | tuple[type, ...]
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    nullable: bool = False
    items: Spec | None = None  # the spec of every element of a list value

    def check(self, key: str, value: Any) -> None:
        if value is None and self.nullable:
            return
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        is_bool = isinstance(value, bool)
        ok = isinstance(value, kinds) and not (is_bool and bool not in kinds)
        if float in kinds and isinstance(value, int) and not is_bool:
            ok = True
        if not ok:
            names = "/".join(k.__name__ for k in kinds)
            raise MedsegError(f"params.yaml: {key}={value!r} has the wrong type; expected {names}")
        if self.items is not None:
            for i, item in enumerate(value):
                self.items.check(f"{key}[{i}]", item)
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(map(str, self.choices))
            raise MedsegError(f"params.yaml: {key}={value!r} is not allowed; choose one of: {allowed}")
        if isinstance(value, (int, float)) and not is_bool:
            if self.low is not None and value < self.low or self.high is not None and value > self.high:
                raise MedsegError(
                    f"params.yaml: {key}={value!r} is out of range [{self.low}, {self.high}]"
                )


def num(low: float | None = None, high: float | None = None) -> Spec:
    return Spec(float, low=low, high=high)


def integer(low: int | None = None, high: int | None = None) -> Spec:
    return Spec(int, low=low, high=high)


SCHEMA: dict[str, Any] = {
    "convert": {
        "size": integer(16, 2_048),
        "window_level": num(),
        "window_width": num(1),
        "workers": integer(0, 256),
        "on_error": Spec(str, ("fail", "skip")),
    },
    "split": {
        "fractions": {"train": num(0, 1), "val": num(0, 1), "test": num(0, 1)},
        "seed": integer(0),
        "folds": integer(1, 20),
    },
    "balance": {"neg_keep": num(0, 1), "pos_repeat": num(0, 100), "seed": integer(0)},
    "augment": {
        "hflip": num(0, 1),
        "vflip": num(0, 1),
        "affine": num(0, 1),
        "elastic": num(0, 1),
        "grid_distortion": num(0, 1),
        "brightness_contrast": num(0, 1),
        "noise": num(0, 1),
        "coarse_dropout": num(0, 1),
    },
    "train": {
        "epochs": integer(1, 100_000),
        "batch_size": integer(1, 4_096),
        "optimizer": Spec(str, ("adam", "adamw", "sgd")),
        "lr": num(0, 10),
        "weight_decay": num(0, 1),
        "scheduler": Spec(str, ("cosine", "none")),
        "warmup_epochs": integer(0, 100_000),
        "min_lr": num(0, 10),
        "grad_accum": integer(1, 1_024),
        "grad_clip": num(0, 1e6),
        "amp": Spec(str, ("auto", "bf16", "fp16", "off")),
        "channels_last": Spec(bool),
        "patience": integer(0, 100_000),
        "ema": num(0, 0.99999),
        "seed": integer(0),
        "device": Spec(str),  # auto, cpu, cuda or cuda:N, checked in extra_checks
        "workers": Spec((int, str)),  # auto or 0-256, checked in extra_checks
        "threshold": num(0, 1),
    },
    "evaluate": {
        "empty": Spec(str, ("one", "nan", "zero")),
        "threshold": Spec((float, str)),
        "tta": Spec(bool),
        "min_area": Spec((int, str)),
        "largest_component": Spec(bool),
        "batch_size": Spec((int, str)),  # auto or >= 1, checked in extra_checks
        "amp": Spec(str, ("auto", "bf16", "fp16", "off")),
        "nsd_tolerance_mm": num(0, 1_000),  # > 0, checked in extra_checks
        "pr_max_pixels": integer(1_000, 100_000_000),
        "resamples": integer(2_000, 1_000_000),
        "seed": integer(0),
    },
    "visualize": {"cases": integer(1, 100)},
}


def _validate(prefix: str, schema: dict[str, Any], values: Any) -> None:
    if not isinstance(values, dict):
        raise MedsegError(f"params.yaml: {prefix} must be a mapping, got {values!r}")
    for key in values:
        if key not in schema:
            allowed = ", ".join(schema)
            raise MedsegError(f"params.yaml: unknown key {prefix}.{key}; known keys: {allowed}")
    for key, spec in schema.items():
        dotted = f"{prefix}.{key}"
        if key not in values:
            raise MedsegError(f"params.yaml: missing key {dotted}")
        if isinstance(spec, dict):
            _validate(dotted, spec, values[key])
        else:
            spec.check(dotted, values[key])


def load_section(name: str, path: Path = PARAMS_FILE, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the validated section `name` (dotted, e.g. 'models.unet') of params.yaml, checked
    against `schema` (default: its entry in SCHEMA)."""
    try:
        params = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise MedsegError(f"{path}: cannot read params: {err}".splitlines()[0]) from err
    values: Any = params
    for part in name.split("."):
        if not isinstance(values, dict) or part not in values:
            raise MedsegError(f"{path}: missing section {name}")
        values = values[part]
    _validate(name, SCHEMA[name] if schema is None else schema, values)
    extra_checks(name, values)
    return values


def _auto_or_int(key: str, value: Any, low: int, high: int) -> None:
    if value == "auto" or isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return
    raise MedsegError(f"params.yaml: {key}={value!r} is not allowed; use 'auto' or an integer in [{low}, {high}]")


def extra_checks(section: str, values: dict[str, Any]) -> None:
    """Cross-key rules that one leaf spec cannot express."""
    if section == "train":
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", values["device"]):
            raise MedsegError(f"params.yaml: train.device={values['device']!r} is not allowed; "
                              "use auto, cpu, cuda or cuda:N")
        _auto_or_int("train.workers", values["workers"], 0, 256)
    if section == "evaluate":
        _auto_or_int("evaluate.batch_size", values["batch_size"], 1, 4_096)
    if section == "split":
        total = sum(values["fractions"].values())
        if abs(total - 1.0) > 1e-6:
            raise MedsegError(f"params.yaml: split.fractions must sum to 1, got {total:g}")
    if section == "evaluate":
        thr = values["threshold"]
        if isinstance(thr, str) and thr != "auto" or isinstance(thr, float) and not 0 < thr < 1:
            raise MedsegError(
                f"params.yaml: evaluate.threshold={thr!r} is not allowed; use 'auto' or a number in (0, 1)"
            )
        if values["nsd_tolerance_mm"] <= 0:
            raise MedsegError(f"params.yaml: evaluate.nsd_tolerance_mm={values['nsd_tolerance_mm']!r} must be "
                              "positive (mm; pixels where no spacing is recorded)")
        area = values["min_area"]
        if isinstance(area, str) and area != "auto" or isinstance(area, int) and not 0 <= area <= 1_000_000:
            raise MedsegError(
                f"params.yaml: evaluate.min_area={area!r} is not allowed; use 'auto' or pixels in [0, 1000000]"
            )
