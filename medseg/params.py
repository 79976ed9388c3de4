"""Load and validate params.yaml sections.

The schema of a section lives here unless a registry owns its allowed values: `dataset` is
described in medseg.datasets.registry, `loss` in medseg.losses, `models.<name>` in
medseg.networks; the stage that reads such a section passes its schema. That keeps every stage's
imports (and so its DVC deps) to what it runs: validating `split` imports no network or reader.

Hand-written because the checks must name the exact dotted key, value and allowed set in one
line; a schema library would add a dependency for ~80 lines and word its errors its own way.
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medseg import paths
from medseg.errors import MedsegError

PARAMS_FILE = paths.PARAMS


# YAML 1.1 (PyYAML) reads 1e-4 as text; YAML 1.2 (DVC's `-S train.lr=1e-4`) as a number: take both
EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def is_number(value: Any) -> bool:
    """An int or float, not a bool (YAML's true/false are ints to Python)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite(value: Any) -> bool:
    """A number (is_number) that is neither NaN nor infinite (an int always is, however large)."""
    return is_number(value) and (isinstance(value, int) or math.isfinite(value))


def is_probability(value: Any) -> bool:
    """A finite number in [0, 1]: a threshold or a per-region cut-off read back from a file medseg wrote."""
    return is_finite(value) and 0 <= value <= 1


def is_count(value: Any) -> bool:
    """A positive int, not a bool: a size, a channel or fold count read back from a file medseg wrote."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class Spec:
    """Type and allowed values of one leaf key. A float key takes ints too, and every number goes
    through the same checks: finite (NaN and inf are refused), then the range, whose ends are
    excluded with `open_low` / `open_high` (e.g. train.lr > 0)."""

    kind: type | tuple[type, ...]
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    nullable: bool = False
    items: Spec | None = None  # the spec of every element of a list value
    open_low: bool = False
    open_high: bool = False
    auto: bool = False  # the string "auto" is allowed too (resolved by medseg.plans, or chosen on val)

    def coerce(self, value: Any) -> Any:
        """`value` as the check sees it: an exponent written without a dot (1e-4) read as a float."""
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if float in kinds and isinstance(value, str) and EXPONENT_FLOAT.fullmatch(value.strip()):
            return float(value)
        return value

    def check(self, key: str, value: Any) -> None:
        value = self.coerce(value)
        if value is None and self.nullable or self.auto and value == "auto":
            return
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        is_bool = isinstance(value, bool)
        ok = isinstance(value, kinds) and not (is_bool and bool not in kinds)
        if float in kinds and is_number(value):
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
        if is_number(value):
            self.check_range(key, value)

    def check_range(self, key: str, value: int | float) -> None:
        """A finite number within [low, high] (an open end excluded)."""
        if not math.isfinite(value):
            raise MedsegError(f"params.yaml: {key}={value!r} is not a finite number")
        below = self.low is not None and (value <= self.low if self.open_low else value < self.low)
        above = self.high is not None and (value >= self.high if self.open_high else value > self.high)
        if below or above:
            bounds = f"{'(' if self.open_low else '['}{self.low}, {self.high}{')' if self.open_high else ']'}"
            raise MedsegError(f"params.yaml: {key}={value!r} is out of range {bounds}")


def num(low: float | None = None, high: float | None = None, *, open_low: bool = False,
        open_high: bool = False) -> Spec:
    return Spec(float, low=low, high=high, open_low=open_low, open_high=open_high)


def integer(low: int | None = None, high: int | None = None) -> Spec:
    return Spec(int, low=low, high=high)


# every seed reaches numpy's legacy RandomState (scikit-learn's random_state), which takes [0, 2**32 - 1]
SEED_MAX = 2**32 - 1


def seed() -> Spec:
    return integer(0, SEED_MAX)


def auto(spec: Spec) -> Spec:
    """`spec` that also takes the string "auto"."""
    return Spec(spec.kind, spec.choices, spec.low, spec.high, spec.nullable, spec.items, spec.open_low,
                spec.open_high, auto=True)


AUTO_MAPPINGS = {"split.fractions"}  # mapping keys that may be the string "auto" instead


SCHEMA: dict[str, Any] = {
    "convert": {
        "profile": Spec(str, ("auto", "cpu", "gpu")),  # the machine class the plan sizes for (medseg.plans)
        "size": auto(integer(16, 2_048)),  # auto: medseg.plans
        # a case's 2D slice files rescaled to its own MR range (lgg); auto: medseg.plans
        "normalize": Spec(str, ("auto", "none", "volume")),
        "window_level": num(),
        "window_width": num(1),
        "workers": integer(0, 256),
        "on_error": Spec(str, ("fail", "skip")),
    },
    "split": {
        "fractions": {"train": num(0, 1), "val": num(0, 1), "test": num(0, 1)},  # > 0 as needed: extra_checks
        "seed": seed(),
        "folds": integer(1, 20),
    },
    # pos_repeat 0 would never draw a positive slice: training would see no foreground
    "balance": {"neg_keep": auto(num(0, 1)), "pos_repeat": auto(num(0, 100, open_low=True)), "seed": seed()},
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
        "epochs": auto(integer(1, 100_000)),
        "batch_size": integer(1, 4_096),
        "optimizer": Spec(str, ("adam", "adamw", "sgd")),
        "lr": num(0, 10, open_low=True),  # the cosine floor is min_lr / lr
        "weight_decay": num(0, 1),
        "scheduler": Spec(str, ("cosine", "poly", "none")),
        "momentum": num(0, 0.999),  # SGD's (nesterov); nnU-Net trains with 0.99
        "warmup_epochs": integer(0, 100_000),
        "min_lr": num(0, 10),
        "grad_accum": integer(1, 1_024),
        "grad_clip": num(0, 1e6),
        "amp": Spec(str, ("auto", "bf16", "fp16", "off")),
        "channels_last": Spec(bool),
        "patience": auto(integer(0, 100_000)),
        "ema": num(0, 0.99999),
        "seed": seed(),
        "device": Spec(str),  # auto, cpu, cuda or cuda:N, checked in extra_checks
        "workers": Spec((int, str)),  # auto or 0-256, checked in extra_checks
        "processes": integer(1, 64),
        "threshold": num(0, 1, open_low=True, open_high=True),  # 0 or 1: every pixel, or none
    },
    "evaluate": {
        "empty": Spec(str, ("one", "nan", "zero")),
        "threshold": Spec((float, str)),
        "tta": Spec(bool),
        "min_area": Spec((int, str)),
        "largest_component": Spec(bool),
        "min_volume": auto(integer(0, 100_000_000)),  # 3D components per case; auto: chosen on val
        "largest_volume": Spec((bool, str)),  # keep the largest 3D component per case; auto: chosen on val
        "batch_size": Spec((int, str)),  # auto or >= 1, checked in extra_checks
        "amp": Spec(str, ("auto", "bf16", "fp16", "off")),
        "nsd_tolerance_mm": num(0, 1_000),  # > 0, checked in extra_checks (its message says why)
        "pr_max_pixels": integer(1_000, 100_000_000),
        "resamples": integer(2_000, 1_000_000),
        "seed": seed(),
    },
    "visualize": {"cases": integer(1, 100)},
}


def _validate(prefix: str, schema: dict[str, Any], values: Any) -> None:
    if not isinstance(values, dict):
        raise MedsegError(f"params.yaml: {prefix} must be a mapping, got {values!r}")
    for key in values:
        if key not in schema:
            allowed = ", ".join(schema)
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f"did you mean {prefix}.{close[0]}? " if close else ""
            raise MedsegError(f"params.yaml: unknown key {prefix}.{key}; {hint}known keys: {allowed}")
    for key, spec in schema.items():
        dotted = f"{prefix}.{key}"
        if key not in values:
            raise MedsegError(f"params.yaml: missing key {dotted}")
        if isinstance(spec, dict) and dotted in AUTO_MAPPINGS and values[key] == "auto":
            continue
        if isinstance(spec, dict):
            _validate(dotted, spec, values[key])
        else:
            values[key] = spec.coerce(values[key])
            spec.check(dotted, values[key])


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping: PyYAML keeps the last one silently,
    while `dvc repro` refuses the file, so a stage run by hand would train on a value dvc never saw."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    first: dict[Any, int] = {}
    for key_node, _ in node.value:
        key, line = loader.construct_object(key_node, deep=True), key_node.start_mark.line + 1
        if key in first:
            raise MedsegError(f"line {line}: key {key!r} given twice in one section (also line {first[key]}); "
                              "keep one")
        first[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_params(path: Path = PARAMS_FILE) -> Any:
    """params.yaml as loaded YAML; an unreadable file, bad YAML or a duplicate key is one line naming it."""
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except MedsegError as err:
        raise MedsegError(f"{path}: {err}") from None
    except (OSError, yaml.YAMLError) as err:
        raise MedsegError(f"{path}: cannot read params: {err}".splitlines()[0]) from err


def load_section(name: str, path: Path = PARAMS_FILE, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the validated section `name` (dotted, e.g. 'models.unet') of params.yaml, checked
    against `schema` (default: its entry in SCHEMA)."""
    params = read_params(path)
    values: Any = params
    for part in name.split("."):
        if not isinstance(values, dict) or part not in values:
            raise MedsegError(f"{path}: missing section {name}")
        values = values[part]
    check_section(name, values, schema)
    return values


def check_section(name: str, values: Any, schema: dict[str, Any] | None = None) -> None:
    """Validate the section `name` held in `values` (coerced in place) as load_section does: against
    `schema` (default: its entry in SCHEMA), then the cross-key rules."""
    _validate(name, SCHEMA[name] if schema is None else schema, values)
    extra_checks(name, values)


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
        _check_schedule(values)
    if section == "evaluate":
        _auto_or_int("evaluate.batch_size", values["batch_size"], 1, 4_096)
    if section == "split" and values["fractions"] != "auto":
        check_fractions(values["fractions"], values["folds"])
    if section == "loss":
        _check_loss(values)
    if section == "evaluate":
        thr = values["threshold"]
        if isinstance(thr, str) and thr != "auto" or is_number(thr) and not 0 < thr < 1:
            raise MedsegError(
                f"params.yaml: evaluate.threshold={thr!r} is not allowed; use 'auto' or a number in (0, 1)"
            )
        if values["nsd_tolerance_mm"] <= 0:
            raise MedsegError(f"params.yaml: evaluate.nsd_tolerance_mm={values['nsd_tolerance_mm']!r} must be "
                              "positive (mm; pixels where no spacing is recorded)")
        if values["largest_volume"] not in (True, False, "auto"):
            raise MedsegError(f"params.yaml: evaluate.largest_volume={values['largest_volume']!r} is not allowed; "
                              "use true, false or 'auto'")
        area = values["min_area"]
        if isinstance(area, str) and area != "auto" or isinstance(area, int) and not 0 <= area <= 1_000_000:
            raise MedsegError(
                f"params.yaml: evaluate.min_area={area!r} is not allowed; use 'auto' or pixels in [0, 1000000]"
            )


def _check_schedule(values: dict[str, Any]) -> None:
    """The learning-rate schedule's keys against each other (epochs once it is a number, not auto)."""
    if values["scheduler"] != "none" and values["min_lr"] > values["lr"]:
        raise MedsegError(f"params.yaml: train.min_lr={values['min_lr']!r} exceeds train.lr={values['lr']!r}: the "
                          f"{values['scheduler']} schedule would raise the learning rate; set min_lr <= lr")
    epochs = values["epochs"]
    if values["scheduler"] != "none" and is_number(epochs) and values["warmup_epochs"] >= epochs > 1:
        raise MedsegError(f"params.yaml: train.warmup_epochs={values['warmup_epochs']!r} is not below "
                          f"train.epochs={epochs!r}: training would end inside the warm-up; lower it")


def check_fractions(fractions: dict[str, float], folds: int) -> None:
    """They sum to 1, and no split that a later stage needs is empty: test (what evaluate scores)
    always; train and val without folds (with folds >= 2 they are pooled into the folds)."""
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise MedsegError(f"params.yaml: split.fractions must sum to 1, got {total:g}")
    needed = {"train": "nothing to train on", "val": "train selects its model and threshold on val",
              "test": "evaluate scores the test split"}
    if folds > 1:
        needed = {"test": needed["test"]}
    for name, why in needed.items():
        if fractions[name] <= 0:
            # pooling into folds helps an empty train or val share, never an empty test share
            hint = "" if folds > 1 or name == "test" else " (or pool train and val into split.folds >= 2 folds)"
            raise MedsegError(f"params.yaml: split.fractions.{name}={fractions[name]!r} leaves the {name} split "
                              f"empty ({why}); give it a share > 0{hint}")


def _check_loss(values: dict[str, Any]) -> None:
    """The loss weights that would train nothing or divide by zero, for the loss types that use them."""
    kind = values["type"]
    if kind == "weighted_ce" and values["pos_weight"] <= 0:
        raise MedsegError(f"params.yaml: loss.pos_weight={values['pos_weight']!r} must be > 0 with "
                          "loss.type=weighted_ce (0 ignores every foreground pixel)")
    if kind in ("tversky", "focal_tversky") and values["tversky_alpha"] + values["tversky_beta"] <= 0:
        raise MedsegError(f"params.yaml: loss.tversky_alpha + loss.tversky_beta must be > 0 with loss.type={kind} "
                          "(both 0 make the loss constant)")
    if kind == "focal_tversky" and values["focal_gamma"] <= 0:
        raise MedsegError(f"params.yaml: loss.focal_gamma={values['focal_gamma']!r} must be > 0 with "
                          "loss.type=focal_tversky (its exponent is 1 / focal_gamma)")
