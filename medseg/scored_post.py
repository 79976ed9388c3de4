"""The cut-off and post-processing evaluate scored a model with, as a record predict and export apply,
so the masks a user deploys are the masks whose Dice was reported.

evaluate writes results/evaluate/<model>/postprocess.json: the threshold(s), whether TTA was on, each
class's steps (binary: one, `foreground`) and the SHA-256 of the checkpoint file(s) they were chosen
for; export copies the record into model.json. A record of another training (the model retrained after
evaluate ran) is refused, never applied to the wrong network.

Hand-written: the steps are medseg.postprocess's; what is new is only the record and the rescaling of
pixel counts from the model's size to a source image's own size.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medseg.errors import MedsegError
from medseg.classes import Classes
from medseg.params import is_probability
from medseg.postprocess import clean_stack, clean_volumes

RECORD = "postprocess.json"
FORMAT = "medseg-postprocess-v1"
BINARY_NAME = "foreground"  # a binary model's one entry in `steps`
STEP_RULES = {"min_area": "a whole number of pixels >= 0", "largest_component": "true or false",
              "min_volume": "a whole number of voxels >= 0", "largest_volume": "true or false"}


def step_names(classes: Classes) -> list[str]:
    """The names a record's steps are keyed by: the classes, or a binary model's one `foreground`."""
    return list(classes.names) if classes.multi else [BINARY_NAME]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_digests(paths: list[Path]) -> list[str]:
    """The SHA-256 of each checkpoint file, in fold order: what ties a record to one training."""
    return [file_digest(Path(p)) for p in paths]


@dataclass(frozen=True)
class Applied:
    """What turns a model's probabilities into its masks: the cut-off (binary) or one per region, TTA,
    and per class (binary: `foreground`) its four post-processing steps."""

    threshold: float | None
    class_thresholds: list[float] | None
    tta: bool
    steps: dict[str, dict[str, Any]]


def make_record(model: str, paths: list[Path], size: int, applied: Applied, chosen_on: str) -> dict[str, Any]:
    """postprocess.json's content."""
    threshold, class_thresholds, tta, steps = applied.threshold, applied.class_thresholds, applied.tta, applied.steps
    return {"format": FORMAT, "model": model, "checkpoints": [str(p) for p in paths],
            "checkpoint_sha256": checkpoint_digests(paths), "size": int(size),
            "threshold": None if threshold is None else float(threshold),
            "class_thresholds": None if class_thresholds is None else [float(t) for t in class_thresholds],
            "tta": bool(tta), "steps": {name: {key: _plain(post[key]) for key in STEP_RULES} for name, post in steps.items()},
            "chosen_on": chosen_on,
            "units": "min_area in pixels and min_volume in voxels at `size` x `size`; predict scales both by a "
                     "source image's own area; min_volume and largest_volume act on a NIfTI volume's slices "
                     "together, not on 2D files predicted one by one"}


def _plain(value: Any) -> Any:
    return bool(value) if isinstance(value, (bool, np.bool_)) else int(value)


def check_record(record: Any, where: str, names: list[str]) -> dict[str, Any]:
    """`record` (parsed JSON) checked value by value against what evaluate writes; `names` are the
    model's classes (binary: [`foreground`])."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise MedsegError(f"{where}: not a medseg post-processing record (format {FORMAT} expected)")
    steps = record.get("steps")
    if not isinstance(steps, dict) or sorted(steps) != sorted(names):
        raise MedsegError(f"{where}: steps are for {sorted(steps) if isinstance(steps, dict) else steps!r}, "
                          f"the model's classes are {names}")
    for name, post in steps.items():
        for key, rule in STEP_RULES.items():
            value = post.get(key) if isinstance(post, dict) else None
            ok = isinstance(value, bool) if rule == "true or false" else (
                isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10**8)
            if not ok:
                raise MedsegError(f"{where}: steps.{name}.{key}={value!r} is not {rule}")
    cuts = [record.get("threshold")] if record.get("threshold") is not None else record.get("class_thresholds") or []
    if not all(map(is_probability, cuts)):
        raise MedsegError(f"{where}: threshold(s) {cuts!r} are not numbers in [0, 1]")
    if not (isinstance(record.get("size"), int) and record["size"] > 0):
        raise MedsegError(f"{where}: size={record.get('size')!r} is not a positive integer")
    if not isinstance(record.get("checkpoint_sha256"), list):
        raise MedsegError(f"{where}: lacks checkpoint_sha256")
    return record


def read_record(path: Path, names: list[str]) -> dict[str, Any]:
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise MedsegError(f"{path}: no such post-processing record (evaluate writes "
                          f"results/evaluate/<model>/{RECORD})") from err
    except (OSError, ValueError) as err:
        raise MedsegError(f"{path}: not valid JSON ({err})") from err
    return check_record(record, str(path), names)


def check_belongs(record: dict[str, Any], where: str, digests: list[str], model: str) -> None:
    """Refuse a record chosen for another training than the checkpoint(s) with these digests."""
    if record.get("model") != model or record["checkpoint_sha256"] != digests:
        raise MedsegError(f"{where}: chosen for another training than this {model} model (its checkpoints changed "
                          "since evaluate ran); run evaluate again, or pass --postprocess off")


def scaled(count: int, shape: tuple[int, ...], size: int) -> int:
    """A pixel count at size x size carried to an image of `shape` (H, W): scaled by the area."""
    return int(round(count * shape[0] * shape[1] / (size * size))) if count > 0 else 0


def apply_slices(masks: np.ndarray, steps: list[dict[str, Any]], size: int, volume: bool) -> np.ndarray:
    """Per-class post-processing of (D, H, W) bool masks, or (D, K, H, W) with several classes (`steps`
    in class order): per slice min_area and largest_component, then, when the D slices are one
    `volume`, min_volume and largest_volume over them, as evaluate chained them."""
    several = masks.ndim == 4
    out = np.zeros_like(masks, dtype=bool)
    shape = masks.shape[-2:]
    rows = pd.DataFrame({"group": 0, "index": np.arange(len(masks))})
    for k, post in enumerate(steps):
        part = masks[:, k] if several else masks
        part = clean_stack(part.astype(bool), scaled(post["min_area"], shape, size), post["largest_component"])
        if volume:
            part = clean_volumes(part, rows, scaled(post["min_volume"], shape, size), post["largest_volume"])
        if several:
            out[:, k] = part
        else:
            out = part
    return out


def has_volume_steps(steps: list[dict[str, Any]]) -> bool:
    return any(post["min_volume"] > 0 or post["largest_volume"] for post in steps)


def describe(record: dict[str, Any] | None) -> str:
    """The steps in a few words, for a log line."""
    if record is None:
        return "no post-processing"
    parts = []
    for name, post in record["steps"].items():
        chosen = [f"{k} {v}" for k, v in post.items() if v not in (0, False)]
        parts.append(f"{name}: {', '.join(chosen) or 'none'}")
    return "post-processing " + "; ".join(parts)
