"""Reading the one pickled format we meet: the Kaggle lung mirror's labels (.pkl / .pkl.gz).

Why this module exists: a pickle can run any code when loaded, and these come from a download.
The unpickler here only builds numpy arrays and plain containers; any other global is refused,
never imported. The mirror's evalseg SegmentArray labels load as inert stand-ins and are made dense
here, so evalseg is never needed (nor imported).
"""
from __future__ import annotations

import codecs
import collections
import gzip
import importlib
import pickle
from pathlib import Path
from typing import IO, Any

import numpy as np

from medseg.errors import MedsegError, cannot, first_line

LABEL_KEYS = ("label", "labels", "mask", "gt", "seg", "segmentation")


class _SegmentArray:
    """Inert stand-in for evalseg.io.segment_array.SegmentArray (the lung mirror's label type)."""


class _SingleSegment:
    """Inert stand-in for evalseg.io.segment_array.SingleSegment."""


def _numpy_global(module: str, name: str) -> Any:
    """numpy.core.* names resolve to numpy._core.* on numpy 2 (no deprecation warning), as is on numpy 1."""
    try:
        return getattr(importlib.import_module(module.replace("numpy.core", "numpy._core", 1)), name)
    except (ImportError, AttributeError):
        return getattr(importlib.import_module(module), name)


_NUMPY_GLOBALS = {
    (mod, name)
    for base in ("numpy.core", "numpy._core")
    for mod, name in (
        (f"{base}.multiarray", "_reconstruct"),
        (f"{base}.multiarray", "scalar"),
        (f"{base}.numeric", "_frombuffer"),
    )
} | {("numpy", "ndarray"), ("numpy", "dtype")}
_PLAIN_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "slice"): slice,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): codecs.encode,  # how protocol 2 pickles bytes
}
_STAND_INS = {"SegmentArray": _SegmentArray, "SingleSegment": _SingleSegment}


class _ArrayUnpickler(pickle.Unpickler):
    """Builds numpy arrays and plain containers only; any other global is refused, never imported."""

    def __init__(self, file: IO[bytes], source: Path) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return _numpy_global(module, name)
        if (module, name) in _PLAIN_GLOBALS:
            return _PLAIN_GLOBALS[(module, name)]
        if module.startswith("evalseg") and name in _STAND_INS:
            return _STAND_INS[name]
        raise MedsegError(
            f"{self._source}: refused to unpickle {module}.{name} (only numpy arrays and plain containers are allowed)"
        )


def load_array_pickle(path: Path) -> Any:
    """Unpickle `path` (.pkl or .pkl.gz) allowing only numpy arrays and plain containers."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            return _ArrayUnpickler(fh, path).load()
    except MedsegError:
        raise
    except Exception as err:  # corrupt pickles raise many types
        raise cannot(path, "unpickle", err) from err


def label_array(obj: Any, source: Path) -> np.ndarray:
    """The label volume inside an unpickled object: an ndarray, or the one volume in a container."""
    if isinstance(obj, np.ndarray):
        return obj
    if isinstance(obj, _SegmentArray):
        return _dense_segment_array(obj, source)
    if isinstance(obj, dict):
        for key in LABEL_KEYS:
            if isinstance(obj.get(key), np.ndarray):
                return obj[key]
        values = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        values = list(obj)
    else:
        values = []
    volumes = [v for v in values if isinstance(v, _SegmentArray) or (isinstance(v, np.ndarray) and v.ndim >= 2)]
    if len(volumes) == 1:
        return label_array(volumes[0], source)
    raise MedsegError(f"{source}: no single label array found in {_describe(obj)}")


def _dense_segment_array(seg: _SegmentArray, source: Path) -> np.ndarray:
    """SegmentArray.todense(): each segment's cropped data placed back at its roi."""
    try:
        state = vars(seg)
        dense = np.full(tuple(state["shape"]), state.get("fill_value", 0), dtype=state["dtype"])
        for part in state["segments"]:
            piece = vars(part)
            if dense.dtype == bool:
                dense[piece["roi"]] |= piece["data"]
            else:
                dense[piece["roi"]] += piece["data"]
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise MedsegError(f"{source}: unreadable SegmentArray ({first_line(err)})") from err
    return dense


def _describe(obj: Any) -> str:
    def one(v: Any) -> str:
        return f"ndarray{v.shape}" if isinstance(v, np.ndarray) else type(v).__name__

    if isinstance(obj, dict):
        return "dict{" + ", ".join(f"{k!r}: {one(v)}" for k, v in list(obj.items())[:8]) + "}"
    if isinstance(obj, (list, tuple)):
        return f"{type(obj).__name__}[" + ", ".join(one(v) for v in obj[:8]) + "]"
    return one(obj)
