"""What a pixel can be: one foreground (binary, the default), one of several exclusive classes (a
label map: softmax over background + classes, as ChestX-Det's findings), or any of several
overlapping regions (one sigmoid channel each, as nnU-Net trains BraTS' whole tumour, core and
enhancing tumour).

`dataset.classes` names each class by the raw label values it gathers; `dataset.class_mode` says
exclusive or regions. One class (or none) is the binary pipeline, unchanged. The slice store
holds one uint8 code per pixel: the class index (1..K, 0 background) for exclusive classes, a
bit per region (bit k-1 for region k) for regions; `masks_of` turns codes into one boolean mask
per class, the form every score and picture uses.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg.errors import MedsegError

MODES = ("exclusive", "regions")
MAX_EXCLUSIVE = 64  # class indices in a uint8 label PNG, and far more than any 2D dataset of the field
MAX_REGIONS = 8  # one bit each in a uint8 PNG
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")  # a metrics key, a CSV column suffix, a file name


@dataclass(frozen=True)
class Classes:
    """The classes of a segmentation: names, the raw label values each gathers, and the mode."""

    names: tuple[str, ...]
    values: tuple[tuple[int, ...], ...]
    mode: str  # "binary", "exclusive" or "regions"

    @property
    def multi(self) -> bool:
        return self.mode != "binary"

    @property
    def channels(self) -> int:
        """Network output channels: one logit (binary), background + one per class (softmax), one per region."""
        return len(self.names) + 1 if self.mode == "exclusive" else len(self.names) if self.multi else 1

    def encode(self, label: np.ndarray) -> np.ndarray:
        """Raw integer labels (any shape) -> uint8 codes as the slice store holds them."""
        codes = np.zeros(label.shape, np.uint8)
        for k, values in enumerate(self.values, start=1):
            hit = np.isin(label, values)
            codes[hit] = k if self.mode == "exclusive" else codes[hit] | (1 << (k - 1))
        return codes

    def masks_of(self, codes: np.ndarray) -> np.ndarray:
        """Codes (N, H, W) -> (N, K, H, W) bool, one mask per class (binary: K = 1, any non-zero code)."""
        if not self.multi:
            return (codes > 0)[:, None]
        if self.mode == "exclusive":
            return np.stack([codes == k for k in range(1, len(self.names) + 1)], axis=1)
        return np.stack([(codes >> k) & 1 > 0 for k in range(len(self.names))], axis=1)

    def decide(self, probs: np.ndarray, thresholds: list[float] | None = None) -> np.ndarray:
        """A multi-class network's (N, channels, H, W) probabilities -> (N, K, H, W) bool masks: the
        argmax class (exclusive), or each region at its threshold (default 0.5)."""
        if self.mode == "exclusive":
            return self.masks_of(probs.argmax(axis=1).astype(np.uint8))
        cut = np.asarray(thresholds if thresholds is not None else [0.5] * len(self.names), np.float32)
        return probs >= cut.reshape(1, -1, 1, 1)

    def as_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "names": list(self.names), "values": [list(v) for v in self.values]}


BINARY = Classes(("foreground",), (), "binary")


def from_json(record: dict[str, Any] | None, where: str) -> Classes:
    """The Classes a file medseg wrote records (info.json, a checkpoint header); absent: binary."""
    if record is None:
        return BINARY
    try:
        classes = Classes(tuple(record["names"]), tuple(tuple(int(v) for v in vs) for vs in record["values"]),
                          record["mode"])
    except (KeyError, TypeError, ValueError) as err:
        raise MedsegError(f"{where}: its classes record is damaged ({type(err).__name__}); write it again") from err
    if classes.mode not in MODES or len(classes.names) != len(classes.values) or len(classes.names) < 2:
        raise MedsegError(f"{where}: its classes record is damaged; write it again")
    return classes


def of_preprocess(pre: dict[str, Any] | None, where: str) -> Classes:
    """The Classes a preprocess record carries (info.json, or a checkpoint header's copy of it)."""
    return from_json((pre or {}).get("classes"), where)


def from_params(spec: Any, mode: str = "exclusive", labels: list[int] | None = None) -> Classes:
    """`dataset.classes` (`spec`) and `dataset.class_mode`, checked: a mapping name -> raw label values;
    exclusive classes may not share a value; one class is the binary pipeline (as `dataset.labels`)."""
    if spec is None:
        return BINARY
    if not isinstance(spec, dict) or not spec:
        raise MedsegError("params.yaml: dataset.classes must map class names to label values, e.g. "
                          "{edema: [2], core: [1, 3]}, or be null")
    if labels is not None:
        raise MedsegError("params.yaml: dataset.labels and dataset.classes are both set; classes name their own "
                          "label values: set dataset.labels to null")
    names, values = [], []
    for name, listed in spec.items():
        key = f"dataset.classes.{name}"
        if not isinstance(name, str) or not NAME.fullmatch(name) or name in ("background", "foreground"):
            raise MedsegError(f"params.yaml: {key}: a class name is a letter then letters, digits or _ (at most 32), "
                              "and not background or foreground")
        listed = listed if isinstance(listed, list) else [listed]
        if not listed or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65_535 for v in listed):
            raise MedsegError(f"params.yaml: {key}={spec[name]!r}: list the raw label values (integers 1 to 65535) "
                              "this class gathers")
        names.append(name)
        values.append(tuple(sorted(set(listed))))
    if len(names) == 1:
        return BINARY
    most = MAX_EXCLUSIVE if mode == "exclusive" else MAX_REGIONS
    if len(names) > most:
        raise MedsegError(f"params.yaml: dataset.classes has {len(names)} classes; {mode} takes at most {most}")
    if mode == "exclusive":
        seen: dict[int, str] = {}
        for name, vs in zip(names, values):
            for v in vs:
                if v in seen:
                    raise MedsegError(f"params.yaml: dataset.classes: label value {v} is in both {seen[v]} and {name}; "
                                      "exclusive classes cannot share a value (set dataset.class_mode: regions for "
                                      "overlapping regions)")
                seen[v] = name
    return Classes(tuple(names), tuple(values), mode)


def binary_labels(spec: Any, labels: list[int] | None) -> list[int] | None:
    """The foreground label values of the binary pipeline: `dataset.labels`, or the values of a one-class
    `dataset.classes` (`spec`, which is the same thing by another name)."""
    if isinstance(spec, dict) and len(spec) == 1:
        listed = next(iter(spec.values()))
        return sorted(set(listed if isinstance(listed, list) else [listed]))
    return labels
