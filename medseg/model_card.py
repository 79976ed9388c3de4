"""The model card: what a train stage hands to evaluate, predict and export, written and read only here.

On disk a card is the files of data/models/<model>/ (their names are medseg.paths'): every best.pt
holds the header (what built the network), the threshold it is applied with and where that came
from, and the training's compute record; a k-fold folder holds fold_<k>/best.pt for k < K and
ensemble.json (K, the out-of-fold threshold, the run id every fold carries). last.pt adds what an
exact resume needs. Checkpoints load with torch.load(weights_only=True) and are refused, in one
line naming the file, when a field is missing or not of the type and range it was written with.
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from medseg import paths
from medseg.classes import Classes, of_preprocess
from medseg.errors import MedsegError
from medseg.outputs import write_atomic, write_json
from medseg.params import is_count, is_finite, is_probability

FORMAT = "medseg-checkpoint-v1"
ENSEMBLE = paths.ENSEMBLE
MAX_FOLDS = 20  # split.folds' largest value: an edited fold count is refused before any path is listed
FOLD_DIR = re.compile(r"fold_\d+")


@dataclass(frozen=True)
class Header:
    """What built the network, in every checkpoint of a model (the fold ones add fold, folds and run)."""

    model: str
    model_params: dict[str, Any]
    in_channels: int
    preprocess: dict[str, Any]  # the slices' info.json: size, channels, window, rescaling, classes
    fold: int | None = None
    folds: int | None = None
    run: str | None = None  # the k-fold training's id (stages.train.run_id); None without folds

    def fields(self) -> dict[str, Any]:
        """The checkpoint's header keys (the fold keys only for a fold model)."""
        return {key: value for key, value in asdict(self).items() if value is not None or key in SHARED}

    def shared(self) -> tuple[Any, ...]:
        """What every fold of one model must agree on."""
        return tuple(getattr(self, key) for key in SHARED)

    @property
    def classes(self) -> Classes:
        return of_preprocess(self.preprocess, f"{self.model} checkpoint header")

    @classmethod
    def read(cls, ckpt: dict[str, Any], path: Path) -> Header:
        """The header of a loaded checkpoint, each field of the type and range it was written with."""
        _check_identity(ckpt, path)
        pre = ckpt.get("preprocess")
        if pre is None:
            raise MedsegError(f"{path}: checkpoint lacks its preprocessing; retrain with this version")
        _check_preprocess(pre, path)
        return cls(ckpt["model"], ckpt["model_params"], ckpt["in_channels"], pre,
                   ckpt.get("fold"), ckpt.get("folds"), ckpt.get("run"))


SHARED = ("model", "model_params", "in_channels", "preprocess")


def _check_identity(ckpt: dict[str, Any], path: Path) -> None:
    if not isinstance(ckpt["model"], str) or not isinstance(ckpt["model_params"], dict):
        raise MedsegError(f"{path}: checkpoint header model={ckpt['model']!r} / model_params is not what medseg "
                          "writes (a name and a mapping)")
    if not is_count(ckpt["in_channels"]):
        raise MedsegError(f"{path}: checkpoint in_channels={ckpt['in_channels']!r} is not a positive integer")


def _check_preprocess(pre: Any, path: Path) -> None:
    if not isinstance(pre, dict):
        raise MedsegError(f"{path}: checkpoint preprocess={pre!r} is not a mapping")
    for key in ("size", "channels"):
        if not is_count(pre.get(key)):
            raise MedsegError(f"{path}: checkpoint preprocess.{key}={pre.get(key)!r} is not a positive integer")
    for key in ("window_level", "window_width"):
        if key in pre and not is_finite(pre[key]):
            raise MedsegError(f"{path}: checkpoint preprocess.{key}={pre[key]!r} is not a finite number")


@dataclass(frozen=True)
class Threshold:
    """The cut-off a model's masks are decided with, and where it came from. `tuned`: chosen on val (or
    out-of-fold) data by a training that finished; a best.pt written during training holds the
    untuned train.threshold until the end of the run replaces it."""

    value: float
    source: str
    tuned: bool
    per_class: list[float] | None = None  # one per region of a regions model, chosen as `value`

    def fields(self) -> dict[str, Any]:
        """The keys of best.pt and ensemble.json (`threshold_source` only once tuned: what marks it)."""
        return {"threshold": self.value, **({"threshold_source": self.source} if self.tuned else {}),
                **({"class_thresholds": self.per_class} if self.per_class is not None else {})}

    @classmethod
    def read(cls, record: dict[str, Any], where: str, default_source: str) -> Threshold:
        """From a best.pt or an ensemble.json, each value checked; `where` begins the error line."""
        value = record.get("threshold", 0.5)
        if not is_probability(value):
            raise MedsegError(f"{where}threshold={value!r} is not a number in [0, 1]")
        cuts = record.get("class_thresholds")
        if cuts is not None and not (isinstance(cuts, list) and cuts and all(map(is_probability, cuts))):
            raise MedsegError(f"{where}class_thresholds={cuts!r} is not a list of numbers in [0, 1]")
        tuned = "threshold_source" in record
        return cls(float(value), str(record.get("threshold_source", default_source)), tuned, cuts)


@dataclass(frozen=True)
class Compute:
    """What a training cost and ran on (best.pt's `compute`); None where an older checkpoint lacks it."""

    device: str | None = None
    amp: str | None = None
    torch: str | None = None
    batch_size: int | None = None
    epochs: int | None = None
    train_seconds: float | None = None
    train_images_per_s: float | None = None
    peak_memory_mb: float | None = None

    @classmethod
    def read(cls, record: Any) -> Compute:
        record = record if isinstance(record, dict) else {}
        return cls(**{key: record.get(key) for key in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ModelCard:
    """One model as train left it: its header, its threshold, one checkpoint and compute record per
    member (one, or one per fold of a k-fold folder)."""

    header: Header
    threshold: Threshold
    checkpoints: list[Path]
    classes: Classes  # what the network's output channels are (medseg.classes)
    computes: list[Compute] = field(default_factory=list)

    @property
    def folds(self) -> int:
        return len(self.checkpoints)

    @property
    def batch_size(self) -> int:
        """The batch the model trained with: what its device is known to hold (16 for older checkpoints)."""
        return int(self.computes[0].batch_size or 16) if self.computes else 16


# --- checkpoint files


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    write_atomic(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load safely; anything that is not a medseg checkpoint, or whose header or threshold is not what
    medseg writes, is rejected with one line naming the file."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise MedsegError(f"{path}: checkpoint not found") from err
    except Exception as err:  # unpickling errors come in many types
        raise MedsegError(f"{path}: not a loadable checkpoint ({type(err).__name__})") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise MedsegError(f"{path}: not a medseg checkpoint")
    for key in ("model", "model_params", "in_channels", "state_dict"):
        if key not in ckpt:
            raise MedsegError(f"{path}: checkpoint lacks '{key}'")
    check_header(path, ckpt)
    return ckpt


def check_header(path: Path, ckpt: dict[str, Any]) -> None:
    """The fields a checkpoint is read back by, of the type and range it was written with (a checkpoint
    without preprocess is an older version's: refused where a card is read)."""
    _check_identity(ckpt, path)
    if ckpt.get("preprocess") is not None:
        _check_preprocess(ckpt["preprocess"], path)
    Threshold.read(ckpt, f"{path}: checkpoint ", "")


def write_best(path: Path, header: Header, state_dict: dict[str, Any], epoch: int, val_dice: float,
               threshold: float) -> None:
    """best.pt during training: the selected epoch's weights, with the untuned train.threshold."""
    save_checkpoint(path, {**header.fields(), "state_dict": state_dict, "epoch": epoch, "val_dice": val_dice,
                           **Threshold(threshold, "", tuned=False).fields()})


def finalise_best(path: Path, threshold: Threshold, compute: Compute) -> None:
    """best.pt at the end of training: its tuned threshold(s) and its compute record, so the checkpoint
    alone is enough to predict and to report what it cost."""
    ckpt = load_checkpoint(path)
    ckpt.update(threshold.fields())
    ckpt["compute"] = asdict(compute)
    save_checkpoint(path, {k: v for k, v in ckpt.items() if k != "format"})


def is_finalised(ckpt: dict[str, Any]) -> bool:
    """Whether a best.pt holds the tuned threshold of a training that finished."""
    return "threshold_source" in ckpt


def write_last(path: Path, header: Header, state_dict: dict[str, Any], resume: dict[str, Any]) -> None:
    """last.pt: the header and weights, with what an exact resume needs (medseg.resume.RESUME_KEYS)."""
    save_checkpoint(path, {**header.fields(), "state_dict": state_dict, **resume})


# --- k-fold folders


def write_ensemble(folder: Path, folds: int, threshold: Threshold, run: str | None = None) -> None:
    """ensemble.json of a k-fold model folder; `run` is the run id every fold checkpoint carries."""
    write_json(folder / ENSEMBLE, {"folds": folds, "threshold": threshold.value, "threshold_source": threshold.source,
                                   **({"run": run} if run else {}),
                                   **({"class_thresholds": threshold.per_class} if threshold.per_class else {})})


def read_ensemble(folder: Path) -> dict[str, Any]:
    """ensemble.json of a k-fold model folder: folds (>= 2), threshold (in [0, 1]), a regions model's
    class_thresholds and where the threshold came from, each checked: an edited file is one line naming it."""
    path = folder / ENSEMBLE
    try:
        spec = json.loads(path.read_text())
        folds, threshold = spec["folds"], spec["threshold"]
    except FileNotFoundError as err:
        raise MedsegError(f"{path}: missing; run the train stage of this model to the end") from err
    except (ValueError, KeyError, TypeError) as err:
        raise MedsegError(f"{path}: not a medseg ensemble description ({type(err).__name__})") from err
    if not is_count(folds) or not 2 <= folds <= MAX_FOLDS:
        raise MedsegError(f"{path}: folds={folds!r} is not a fold count (an integer in [2, {MAX_FOLDS}], as split.folds)")
    Threshold.read(spec, f"{path}: ", "")
    return {**spec, "folds": folds, "threshold": float(threshold)}


def fold_folders(model: Path) -> list[int]:
    """The k of every fold_<k>/ in `model` that holds a best.pt."""
    return sorted(int(p.name[5:]) for p in model.iterdir() if FOLD_DIR.fullmatch(p.name) and (p / paths.BEST).is_file())


def checkpoint_paths(model: Path) -> list[Path]:
    """The best.pt files that make up `model`: the file itself, a folder's best.pt, or a k-fold
    folder's fold_<k>/best.pt for every fold ensemble.json names (each must exist)."""
    if model.is_file() or model.suffix == ".pt":
        return [model]
    if not model.is_dir():
        raise MedsegError(f"{model}: no such checkpoint or model folder")
    folds = fold_folders(model)
    if not (model / ENSEMBLE).exists():
        if folds and not (model / paths.BEST).exists():
            raise MedsegError(f"{model}: holds fold_{folds[0]}..fold_{folds[-1]} but no {ENSEMBLE} (its k-fold training "
                              "did not finish); run its train stage again")
        return [model / paths.BEST]
    count = read_ensemble(model)["folds"]
    found = [model / paths.fold_name(k) / paths.BEST for k in range(count)]
    for path in found:
        if not path.exists():
            raise MedsegError(f"{path}: missing from the k-fold model {model}; rerun its train stage")
    if folds != list(range(count)):
        raise MedsegError(f"{model / ENSEMBLE}: names {count} folds but the folder holds fold_"
                          f"{', fold_'.join(map(str, folds))}; run its train stage again")
    return found


# --- the card of a --model path


def read_card(model: Path) -> tuple[ModelCard, list[dict[str, Any]]]:
    """The card of `model` (a checkpoint, a folder holding best.pt, or a k-fold folder) and its
    loaded checkpoints; one clear line when a checkpoint is unusable or the folds disagree."""
    model = Path(model)
    found = checkpoint_paths(model)
    ckpts = [load_checkpoint(path) for path in found]
    headers = [Header.read(ckpt, path) for path, ckpt in zip(found, ckpts)]
    for path, header in zip(found, headers):
        for key, mine, first in zip(SHARED, header.shared(), headers[0].shared()):
            if mine != first:
                raise MedsegError(f"{path}: {key}={mine!r} differs from {found[0]}'s {first!r}")
    if model.is_dir() and (model / ENSEMBLE).exists():
        record, where = read_ensemble(model), model / ENSEMBLE
        check_one_run(model, found, [h.run for h in headers], record.get("run"))
        threshold = Threshold.read(record, f"{where}: ", "ensemble.json")
    else:
        where = found[0]
        threshold = Threshold.read(ckpts[0], f"{where}: checkpoint ", "default 0.5 (the checkpoint holds no val threshold)")
    classes = of_preprocess(headers[0].preprocess, str(found[0]))
    cuts = threshold.per_class
    if classes.mode == "regions" and cuts is not None and len(cuts) != len(classes.names):
        raise MedsegError(f"{where}: holds {len(cuts)} class threshold(s) for {len(classes.names)} regions "
                          f"({', '.join(classes.names)}); run its train stage again")
    card = ModelCard(headers[0], threshold, found, classes, [Compute.read(c.get("compute")) for c in ckpts])
    return card, ckpts


def check_one_run(model: Path, found: list[Path], runs: list[str | None], ensemble_run: str | None) -> None:
    """The fold checkpoints and ensemble.json of a k-fold folder come from one training: a retrain
    killed after its first folds leaves new folds beside old ones (another split or recipe), whose
    average would be scored as one model. Folders written before run ids existed carry none."""
    for path, run in zip(found, runs):
        if run != runs[0]:
            raise MedsegError(f"{path}: trained by another run than {found[0]} (the split, the sampling or the "
                              f"params changed, and the retrain did not finish); run the train stage of {model.name} "
                              "again")
    if ensemble_run is not None and runs[0] != ensemble_run:
        raise MedsegError(f"{model / ENSEMBLE}: written by another run than its fold checkpoints ({found[0]}); run the "
                          f"train stage of {model.name} again")
