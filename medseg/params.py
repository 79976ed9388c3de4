"""Load and validate params.yaml sections.

Hand-written because the checks must name the exact dotted key, value and allowed set in one
line; a schema library would add a dependency for ~80 lines and word its errors its own way.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medseg.datasets import DATASETS
from medseg.errors import MedsegError

PARAMS_FILE = Path("params.yaml")


@dataclass(frozen=True)
class Spec:
    """Type and allowed values of one leaf key."""

    kind: type | tuple[type, ...]
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    nullable: bool = False

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
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(map(str, self.choices))
            raise MedsegError(f"params.yaml: {key}={value!r} is not allowed; choose one of: {allowed}")
        if isinstance(value, (int, float)) and not is_bool:
            if self.low is not None and value < self.low or self.high is not None and value > self.high:
                raise MedsegError(
                    f"params.yaml: {key}={value!r} is out of range [{self.low}, {self.high}]"
                )


def _num(low: float | None = None, high: float | None = None) -> Spec:
    return Spec(float, low=low, high=high)


def _int(low: int | None = None, high: int | None = None) -> Spec:
    return Spec(int, low=low, high=high)


MODEL_NAMES = ("unet", "attn_unet", "deeplab", "upernet")
LOSS_TYPES = (
    "dice", "bce", "dice_bce", "balanced_ce", "weighted_ce", "focal", "tversky", "focal_tversky"
)

SCHEMA: dict[str, Any] = {
    "dataset": {
        "name": Spec(str, tuple(DATASETS)),
        "source": Spec(str),
        "phantom": {
            "cases": _int(3, 10_000),
            "depth": _int(4, 1_000),
            "size": _int(16, 2_048),
            "seed": _int(0),
        },
    },
    "convert": {
        "size": _int(16, 2_048),
        "window_level": _num(),
        "window_width": _num(1),
        "workers": _int(0, 256),
        "on_error": Spec(str, ("fail", "skip")),
    },
    "split": {
        "fractions": {"train": _num(0, 1), "val": _num(0, 1), "test": _num(0, 1)},
        "seed": _int(0),
    },
    "balance": {"neg_keep": _num(0, 1), "pos_repeat": _num(0, 100), "seed": _int(0)},
    "augment": {
        "hflip": _num(0, 1),
        "vflip": _num(0, 1),
        "affine": _num(0, 1),
        "elastic": _num(0, 1),
        "grid_distortion": _num(0, 1),
        "brightness_contrast": _num(0, 1),
        "noise": _num(0, 1),
        "coarse_dropout": _num(0, 1),
    },
    "train": {
        "epochs": _int(1, 100_000),
        "batch_size": _int(1, 4_096),
        "optimizer": Spec(str, ("adam", "adamw", "sgd")),
        "lr": _num(0, 10),
        "weight_decay": _num(0, 1),
        "scheduler": Spec(str, ("cosine", "none")),
        "warmup_epochs": _int(0, 100_000),
        "min_lr": _num(0, 10),
        "grad_accum": _int(1, 1_024),
        "grad_clip": _num(0, 1e6),
        "amp": Spec(str, ("auto", "bf16", "fp16", "off")),
        "channels_last": Spec(bool),
        "patience": _int(0, 100_000),
        "ema": _num(0, 0.99999),
        "seed": _int(0),
        "device": Spec(str, ("auto", "cpu", "cuda")),
        "workers": _int(0, 256),
        "threshold": _num(0, 1),
    },
    "loss": {
        "type": Spec(str, LOSS_TYPES),
        "pos_weight": _num(0, 10_000),
        "tversky_alpha": _num(0, 1),
        "tversky_beta": _num(0, 1),
        "focal_gamma": _num(0, 10),
    },
    "models": {
        "unet": {"width": _int(1, 1_024)},
        "attn_unet": {"width": _int(1, 1_024)},
        "deeplab": {
            "encoder": Spec(str),
            "decoder_channels": _int(8, 4_096),
            "pretrained": Spec((bool, str), (False, "imagenet")),
        },
        "upernet": {
            "encoder": Spec(str),
            "decoder_channels": _int(8, 4_096),
            "pretrained": Spec((bool, str), (False, "imagenet")),
        },
    },
    "evaluate": {
        "empty": Spec(str, ("one", "nan", "zero")),
        "threshold": Spec((float, str)),
        "tta": Spec(bool),
        "min_area": Spec((int, str)),
        "largest_component": Spec(bool),
        "pr_max_pixels": _int(1_000, 100_000_000),
        "seed": _int(0),
    },
    "visualize": {"cases": _int(1, 100)},
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


def load_section(name: str, path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Return the validated section `name` (dotted, e.g. 'models.unet') of params.yaml."""
    try:
        params = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise MedsegError(f"{path}: cannot read params: {err}".splitlines()[0]) from err
    schema: Any = SCHEMA
    values: Any = params
    for part in name.split("."):
        if not isinstance(values, dict) or part not in values:
            raise MedsegError(f"{path}: missing section {name}")
        schema, values = schema[part], values[part]
    _validate(name, schema, values)
    extra_checks(name, values)
    return values


def extra_checks(section: str, values: dict[str, Any]) -> None:
    """Cross-key rules that one leaf spec cannot express."""
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
        area = values["min_area"]
        if isinstance(area, str) and area != "auto" or isinstance(area, int) and not 0 <= area <= 1_000_000:
            raise MedsegError(
                f"params.yaml: evaluate.min_area={area!r} is not allowed; use 'auto' or pixels in [0, 1000000]"
            )
