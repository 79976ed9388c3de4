"""An exported model (model.onnx + model.json, written by `stages.export`) run by onnxruntime.

Imports neither torch nor the training code, so `predict` runs an export where only numpy, opencv, scipy, pandas,
nibabel, pydicom and onnxruntime are installed. model.json carries what the graph does not: the
preprocessing, the uint8 scaling, the threshold and the post-processing evaluate scored it with.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medseg.classes import Classes, from_json
from medseg.errors import MedsegError
from medseg.params import is_count, is_finite, is_probability
from medseg.scored_post import check_record, step_names
from medseg.tta import flip_averaged

FORMAT = "medseg-onnx-v1"
GRAPH, METADATA = "model.onnx", "model.json"
INPUT, OUTPUT = "image", "prob"
UINT8_DIVISOR = 255.0  # the model sees uint8 / 255 in float32, as medseg.inference.predict_probs feeds it
NEEDED = ("preprocess", "threshold", "in_channels", "input", "output")


def is_export(model: Path) -> bool:
    """True for a .onnx file or a folder holding model.onnx (what predict runs with onnxruntime)."""
    return model.suffix == ".onnx" or (model.is_dir() and (model / GRAPH).exists())


def export_files(model: Path) -> tuple[Path, Path]:
    """(graph, metadata): the .onnx file named and the .json of the same name beside it, or a folder's
    model.onnx and model.json."""
    graph = model if model.suffix == ".onnx" else model / GRAPH
    return graph, graph.with_suffix(".json")


def read_metadata(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise MedsegError(f"{path}: missing; an ONNX model needs the JSON that `export` writes beside it "
                          f"({METADATA})") from err
    except (OSError, ValueError) as err:
        raise MedsegError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise MedsegError(f"{path}: not a medseg ONNX description (format {FORMAT} expected)")
    missing = [key for key in NEEDED if key not in meta]
    if missing:
        raise MedsegError(f"{path}: lacks {', '.join(missing)}")
    for key, ok, rule in _RULES:
        value = _at(meta, key)
        if not ok(value):
            raise MedsegError(f"{path}: {key}={value!r} is not {rule}")
    classes = check_classes(path, meta)
    if meta.get("postprocess") is not None:
        check_record(meta["postprocess"], f"{path}: postprocess", step_names(classes))
    if meta["preprocess"]["channels"] != meta["in_channels"]:
        raise MedsegError(f"{path}: preprocess.channels={meta['preprocess']['channels']!r} differs from "
                          f"in_channels={meta['in_channels']!r}")
    return meta


def check_classes(path: Path, meta: dict[str, Any]) -> Classes:
    """model.json's classes (binary without a record): a readable classes record, and for regions one
    threshold in [0, 1] per region."""
    classes = from_json(meta.get("classes"), str(path))
    if classes.mode == "regions":
        cuts = meta.get("class_thresholds")
        if not (isinstance(cuts, list) and len(cuts) == len(classes.names) and all(map(is_probability, cuts))):
            raise MedsegError(f"{path}: class_thresholds={cuts!r} is not one number in [0, 1] per region "
                              f"({', '.join(classes.names)})")
    return classes


def _at(meta: dict[str, Any], key: str) -> Any:
    """meta's value at a dotted key; None where a level is missing or not a mapping."""
    value: Any = meta
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


# model.json's values, each with the rule `export` writes it by: an edited or foreign file is one line
_RULES = (
    ("input.name", lambda v: isinstance(v, str) and bool(v), "a graph input name"),
    ("output.name", lambda v: isinstance(v, str) and bool(v), "a graph output name"),
    ("input.divisor", lambda v: is_finite(v) and v > 0, "a number > 0"),
    ("threshold", is_probability, "a number in [0, 1]"),
    ("in_channels", is_count, "a positive integer"),
    ("preprocess.size", is_count, "a positive integer"),
    ("preprocess.channels", is_count, "a positive integer"),
)


def execution_providers(available: list[str]) -> list[str]:
    """CUDA first where this onnxruntime build offers it (onnxruntime-gpu on a GPU machine), the CPU always
    as the fallback onnxruntime uses for any node the first cannot run."""
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available or p.startswith("CPU")]


class OnnxModel:
    """uint8 slices in, foreground probabilities out, computed as predict_probs computes them."""

    def __init__(self, graph: Path | bytes, meta: dict[str, Any], threads: int = 0, where: str = "ONNX model") -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's default, one per physical core
        options.log_severity_level = 3  # errors only: its warnings are about graph rewrites, not the user's input
        try:
            model = str(graph) if isinstance(graph, Path) else graph
            providers = execution_providers(ort.get_available_providers())
            self.session = ort.InferenceSession(model, options, providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
            reason = str(err).strip().splitlines()[0].rpartition(" failed:")[2][-160:] if str(err).strip() else ""
            raise MedsegError(f"{where}: not a loadable ONNX model ({type(err).__name__}: {reason})") from err
        self.meta = meta
        self.input, self.output = meta["input"]["name"], meta["output"]["name"]
        self.divisor = float(meta["input"]["divisor"])
        self.classes = from_json(meta.get("classes"), where)  # binary without a classes record
        self._check_graph(where)

    def _check_graph(self, where: str) -> None:
        """The graph's own input and output against model.json, before any image is read: a foreign or
        edited graph (other names, another channel count, more than one output channel) is one line."""
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        for kind, name, found in (("input", self.input, inputs), ("output", self.output, outputs)):
            if name not in found:
                raise MedsegError(f"{where}: the graph has no {kind} {name!r} (its {kind}s: "
                                  f"{', '.join(map(repr, found))}); it is not the graph model.json describes")
        for kind, shape, want in (("input", inputs[self.input], self.meta["in_channels"]),
                                  ("output", outputs[self.output], self.classes.channels)):
            channels = shape[1] if len(shape) == 4 else None
            if len(shape) != 4 or isinstance(channels, int) and channels != want:
                raise MedsegError(f"{where}: the graph's {kind} has shape {shape}; model.json describes N x {want} "
                                  "x H x W")

    @classmethod
    def load(cls, model: Path, threads: int = 0) -> OnnxModel:
        """The export at `model` (its .onnx file or its folder)."""
        graph, meta_path = export_files(Path(model))
        if not graph.is_file():
            raise MedsegError(f"{graph}: ONNX model not found")
        return cls(graph, read_metadata(meta_path), threads, str(graph))

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output], {self.input: x})[0]
        return out if self.classes.multi else out[:, 0]

    def probs(self, images: np.ndarray, tta: bool = False, batch_size: int = 32) -> np.ndarray:
        """(N, H, W, C) uint8 -> (N, H, W) float32 foreground probabilities (several classes: (N,
        channels, H, W)); `tta` averages a h-flip."""
        if images.shape[3] != self.meta["in_channels"]:
            raise MedsegError(f"ONNX model takes {self.meta['in_channels']} channel(s), got {images.shape[3]}")
        shape = (len(images), self.classes.channels, *images.shape[1:3]) if self.classes.multi else images.shape[:3]
        out = np.empty(shape, np.float32)
        for start in range(0, len(images), batch_size):
            x = images[start: start + batch_size].transpose(0, 3, 1, 2).astype(np.float32, order="C") / self.divisor
            out[start: start + len(x)] = flip_averaged(self._run, x) if tta else self._run(x)
        return out
