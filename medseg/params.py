"""Load and validate params.yaml sections.

Each section is a frozen dataclass (Section) whose fields carry their rule and help; it lives here unless
its owner defines it: `dataset` in medseg.datasets.registry, `loss` in medseg.losses, `models.<name>` in
medseg.networks. That keeps every stage's imports (and so its DVC deps) to what it runs: validating
`split` imports no network or reader.

Hand-written because the checks must name the exact dotted key, value and allowed set in one
line; a schema library would add a dependency for ~80 lines and word its errors its own way.
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from medseg import paths
from medseg.errors import MedsegError, cannot

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


def key(spec: Spec | dict[str, Spec], help: str) -> Any:
    """A section field: its rule (a Spec, or a dict of Specs for a mapping value) and its one-line help,
    read by the loader, by the generated params reference (docs/reference/params.md) and its test."""
    return field(metadata={"spec": spec, "help": help})


S = TypeVar("S", bound="Section")


@dataclass(frozen=True)
class Section:
    """A typed, validated params.yaml section. Subclasses name their section in `NAME`, declare each
    key with `key(spec, help)`, and put the rules that involve two keys in `check` (run on every
    construction, so a `replace` that plans an `auto` value is checked again)."""

    NAME: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Rules across keys; none by default."""

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return {f.name: f.metadata["spec"] for f in fields(cls)}

    @classmethod
    def helps(cls) -> dict[str, str]:
        return {f.name: f.metadata["help"] for f in fields(cls)}

    @classmethod
    def parse(cls: type[S], values: Any, name: str | None = None) -> S:
        """The section from `values` (a mapping as params.yaml holds it), every leaf checked against its
        Spec (unknown and missing keys named), then the rules across keys."""
        _validate(name or cls.NAME, cls.schema(), values)
        return cls(**values)

    @classmethod
    def load(cls: type[S], path: Path = PARAMS_FILE, name: str | None = None) -> S:
        """The validated section of params.yaml at `path` (its dotted name: `name`, default NAME)."""
        dotted = name or cls.NAME
        values: Any = read_params(path)
        for part in dotted.split("."):
            if not isinstance(values, dict) or part not in values:
                raise MedsegError(f"{path}: missing section {dotted}")
            values = values[part]
        return cls.parse(values, dotted)

    def as_dict(self) -> dict[str, Any]:
        """The section as params.yaml holds it (for JSON records: checkpoint headers, run ids)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def with_values(self: S, **changes: Any) -> S:
        """A copy with `changes` (each checked against its Spec), then the rules across keys."""
        schema = type(self).schema()
        checked = {name: _check_leaf(f"{self.NAME}.{name}", schema[name], value) for name, value in changes.items()}
        return replace(self, **checked)


@dataclass(frozen=True)
class ConvertParams(Section):
    NAME: ClassVar[str] = "convert"
    profile: str = key(Spec(str, ("auto", "cpu", "gpu")), "the machine class the plan sizes for (auto: a CUDA device "
                       "means gpu)")
    size: int | str = key(auto(integer(16, 2_048)), "side of the square 2D slices in pixels; auto: from the plan")
    normalize: str = key(Spec(str, ("auto", "none", "volume")), "rescale a case's 2D slice files to its own MR "
                         "range (volume) or not; auto: from the plan (volume for lgg)")
    window_level: float = key(num(), "CT window centre in HU (CT volumes only)")
    window_width: float = key(num(1), "CT window width in HU (CT volumes only)")
    workers: int = key(integer(0, 256), "processes that convert cases in parallel")
    on_error: str = key(Spec(str, ("fail", "skip")), "an unreadable case stops the stage (fail) or is listed in "
                        "results/convert/skipped.csv (skip)")


@dataclass(frozen=True)
class SplitParams(Section):
    NAME: ClassVar[str] = "split"
    fractions: dict[str, float] | str = key({"train": num(0, 1), "val": num(0, 1), "test": num(0, 1)},
                                            "patients in train / val / test, summing to 1; auto: from the plan")
    seed: int = key(seed(), "seed of the patient shuffle and the fold assignment")
    folds: int = key(integer(1, 20), "K >= 2 pools train and val into K patient folds (cross-validation)")

    def check(self) -> None:
        if self.fractions != "auto":
            check_fractions(self.fractions, self.folds)


@dataclass(frozen=True)
class BalanceParams(Section):
    NAME: ClassVar[str] = "balance"
    neg_keep: float | str = key(auto(num(0, 1)), "share of slices without foreground kept for training; auto: "
                                "from the plan")
    # pos_repeat 0 would never draw a positive slice: training would see no foreground
    pos_repeat: float | str = key(auto(num(0, 100, open_low=True)), "draws of each slice with foreground per epoch "
                                  "(fractions drawn at random); auto: from the plan")
    seed: int = key(seed(), "seed of the negative-slice draw")


@dataclass(frozen=True)
class AugmentParams(Section):
    NAME: ClassVar[str] = "augment"
    hflip: float = key(num(0, 1), "probability of a horizontal flip")
    vflip: float = key(num(0, 1), "probability of a vertical flip")
    affine: float = key(num(0, 1), "probability of a shift / scale / rotation")
    elastic: float = key(num(0, 1), "probability of an elastic deformation")
    grid_distortion: float = key(num(0, 1), "probability of a grid distortion")
    brightness_contrast: float = key(num(0, 1), "probability of a brightness and contrast change")
    noise: float = key(num(0, 1), "probability of Gaussian noise")
    coarse_dropout: float = key(num(0, 1), "probability of dropping rectangular holes")
    missing_channels: float = key(num(0, 1), "probability that an image shows a missing MR sequence as a set that "
                                  "fills one with another stores it: other channels replaced by augment.fill_channel")
    fill_channel: int = key(integer(0, 63), "the channel such a set copies into a missing one (LGG: 1, FLAIR)")


@dataclass(frozen=True)
class TrainParams(Section):
    NAME: ClassVar[str] = "train"
    epochs: int | str = key(auto(integer(1, 100_000)), "training epochs (at most, with patience); auto: from the plan")
    batch_size: int | str = key(auto(integer(1, 4_096)), "images per optimizer step (per process under DDP); auto: "
                                "from the plan")
    optimizer: str = key(Spec(str, ("adam", "adamw", "sgd")), "the optimizer (sgd: Nesterov, train.momentum)")
    lr: float = key(num(0, 10, open_low=True), "peak learning rate")
    weight_decay: float = key(num(0, 1), "weight decay")
    scheduler: str = key(Spec(str, ("cosine", "poly", "none")), "learning-rate decay after the warm-up")
    momentum: float = key(num(0, 0.999), "SGD momentum (nnU-Net trains with 0.99)")
    warmup_epochs: int = key(integer(0, 100_000), "epochs of linear learning-rate warm-up")
    min_lr: float = key(num(0, 10), "the learning rate the schedule decays to")
    grad_accum: int = key(integer(1, 1_024), "batches whose gradients are summed per optimizer step")
    grad_clip: float = key(num(0, 1e6), "gradient-norm clip (0: none)")
    amp: str = key(Spec(str, ("auto", "bf16", "fp16", "off")), "mixed precision; auto: bf16 where the CPU or GPU "
                   "runs it natively, else fp32")
    channels_last: bool | str = key(Spec((bool, str)), "NHWC memory format; auto: on CUDA (cuDNN's bf16 and fp16 "
                                    "kernels are NHWC), off on CPU")
    compile: str = key(Spec(str, ("off", "default", "reduce-overhead", "max-autotune")), "torch.compile the "
                       "network for training (off, or a torch.compile mode)")
    sync_bn: bool | str = key(Spec((bool, str)), "SyncBatchNorm across DDP processes; auto: on under DDP on CUDA "
                              "when a process's batch is below 16")
    patience: int | str = key(auto(integer(0, 100_000)), "epochs without a better val Dice before stopping (0: "
                              "never); auto: from the plan")
    ema: float = key(num(0, 0.99999), "weight EMA decay (0: off)")
    seed: int = key(seed(), "seed of the weights, the shuffle and the augmentation")
    device: str = key(Spec(str), "auto, cpu, cuda or cuda:N")
    workers: int | str = key(Spec((int, str)), "DataLoader workers, or auto (0 on CPU, 4 on CUDA)")
    processes: int = key(integer(1, 64), "DDP processes (torchrun), one per GPU")
    data_path: str = key(Spec(str, ("auto", "loader", "device")), "where training batches are drawn and augmented: "
                         "DataLoader workers with albumentations (loader), or slices held on the device and augmented "
                         "there in batches (device); auto: device on CUDA, loader on CPU")
    checkpoint_every: int | str = key(auto(integer(1, 100_000)), "write last.pt every N epochs (and at the last "
                                      "one and whenever best.pt is written); auto: 1 on CPU, 5 on CUDA")
    image_every: int | str = key(auto(integer(1, 100_000)), "log the val prediction grid every N epochs (and at "
                                 "the last one); auto: 1 on CPU, 5 on CUDA")
    threshold: float = key(num(0, 1, open_low=True, open_high=True), "probability cut-off of the val Dice that "
                           "selects the epoch")
    select: str = key(Spec(str, ("auto", "best", "final")), "the weights best.pt keeps: best (the epoch of the best val "
                      "Dice; train.patience stops early) or final (the last epoch of the schedule, as nnU-Net keeps; "
                      "no early stop); auto: from the plan")

    def check(self) -> None:
        _check_device("train.device", self.device)
        _auto_or_int("train.workers", self.workers, 0, 256)
        for name in ("channels_last", "sync_bn"):
            _auto_or_bool(f"train.{name}", getattr(self, name))
        _check_schedule(self)


@dataclass(frozen=True)
class EvaluateParams(Section):
    NAME: ClassVar[str] = "evaluate"
    empty: str = key(Spec(str, ("one", "nan", "zero")), "Dice of a case with empty truth and empty prediction")
    threshold: float | str = key(Spec((float, str)), "probability cut-off; auto: best pixel F1 on val (or the "
                                 "training's)")
    tta: bool = key(Spec(bool), "average the flipped predictions")
    min_area: int | str = key(Spec((int, str)), "drop 2D components below this many pixels; auto: chosen on val")
    largest_component: bool = key(Spec(bool), "keep only the largest 2D component per slice")
    min_volume: int | str = key(auto(integer(0, 100_000_000)), "drop 3D components below this many voxels per "
                                "case; auto: chosen on val")
    largest_volume: bool | str = key(Spec((bool, str)), "keep the largest 3D component per case; auto: chosen on "
                                     "val")
    batch_size: int | str = key(Spec((int, str)), "images per forward pass; auto: the training's")
    device: str = key(Spec(str), "auto, cpu, cuda or cuda:N (e.g. the GPU a queued experiment was pinned to)")
    amp: str = key(Spec(str, ("auto", "bf16", "fp16", "off")), "mixed precision of inference")
    nsd_tolerance_mm: float = key(num(0, 1_000), "NSD boundary tolerance in mm (pixels where no spacing is "
                                  "recorded)")
    pr_max_pixels: int = key(integer(1_000, 100_000_000), "pixels sampled for the PR curve and AP")
    resamples: int = key(integer(2_000, 1_000_000), "bootstrap resamples of each CI and paired test")
    seed: int = key(seed(), "seed of the bootstrap and the pixel sample")

    def check(self) -> None:
        _check_device("evaluate.device", self.device)
        _auto_or_int("evaluate.batch_size", self.batch_size, 1, 4_096)
        thr = self.threshold
        if isinstance(thr, str) and thr != "auto" or is_number(thr) and not 0 < thr < 1:
            raise MedsegError(f"params.yaml: evaluate.threshold={thr!r} is not allowed; use 'auto' or a number in (0, 1)")
        if self.nsd_tolerance_mm <= 0:
            raise MedsegError(f"params.yaml: evaluate.nsd_tolerance_mm={self.nsd_tolerance_mm!r} must be "
                              "positive (mm; pixels where no spacing is recorded)")
        _auto_or_bool("evaluate.largest_volume", self.largest_volume)
        area = self.min_area
        if isinstance(area, str) and area != "auto" or isinstance(area, int) and not 0 <= area <= 1_000_000:
            raise MedsegError(f"params.yaml: evaluate.min_area={area!r} is not allowed; use 'auto' or pixels in "
                              "[0, 1000000]")


@dataclass(frozen=True)
class VisualizeParams(Section):
    NAME: ClassVar[str] = "visualize"
    cases: int = key(integer(1, 100), "best and worst test cases drawn per model")


# the sections params.py owns; dataset (medseg.datasets.registry), loss (medseg.losses) and models.<name>
# (medseg.networks) are defined beside what they configure
SECTIONS: dict[str, type[Section]] = {s.NAME: s for s in (ConvertParams, SplitParams, BalanceParams, AugmentParams,
                                                           TrainParams, EvaluateParams, VisualizeParams)}


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
        values[key] = _check_leaf(dotted, spec, values[key])


def _check_leaf(dotted: str, spec: Spec | dict[str, Any], value: Any) -> Any:
    """`value` checked against `spec` (a mapping value against its dict of Specs), as coerced."""
    if isinstance(spec, dict):
        if not (dotted in AUTO_MAPPINGS and value == "auto"):
            _validate(dotted, spec, value)
        return value
    value = spec.coerce(value)
    spec.check(dotted, value)
    return value


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
# booleans as YAML 1.2 (and DVC, which rewrites params.yaml on `-S`) read them: true and false only, so a
# value DVC writes unquoted, such as `amp: off` or `compile: off`, stays the string it was
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                       list("tTfF"))


def read_params(path: Path = PARAMS_FILE) -> Any:
    """params.yaml as loaded YAML; an unreadable file, bad YAML or a duplicate key is one line naming it."""
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except MedsegError as err:
        raise MedsegError(f"{path}: {err}") from None
    except (OSError, yaml.YAMLError) as err:
        raise cannot(path, "read params", err) from err


def _check_device(key: str, value: str) -> None:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise MedsegError(f"params.yaml: {key}={value!r} is not allowed; use auto, cpu, cuda or cuda:N")


def _auto_or_int(key: str, value: Any, low: int, high: int) -> None:
    if value == "auto" or isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return
    raise MedsegError(f"params.yaml: {key}={value!r} is not allowed; use 'auto' or an integer in [{low}, {high}]")


def _auto_or_bool(key: str, value: Any) -> None:
    if value == "auto" or isinstance(value, bool):
        return
    raise MedsegError(f"params.yaml: {key}={value!r} is not allowed; use 'auto', true or false")


def _check_schedule(cfg: TrainParams) -> None:
    """The learning-rate schedule's keys against each other (epochs once it is a number, not auto)."""
    if cfg.scheduler != "none" and cfg.min_lr > cfg.lr:
        raise MedsegError(f"params.yaml: train.min_lr={cfg.min_lr!r} exceeds train.lr={cfg.lr!r}: the "
                          f"{cfg.scheduler} schedule would raise the learning rate; set min_lr <= lr")
    epochs = cfg.epochs
    if cfg.scheduler != "none" and is_number(epochs) and cfg.warmup_epochs >= epochs > 1:
        raise MedsegError(f"params.yaml: train.warmup_epochs={cfg.warmup_epochs!r} is not below "
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
