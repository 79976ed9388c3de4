"""What medseg wrote, edited at random (issue 27): any value of model.json, ensemble.json or a
checkpoint header replaced by anything JSON or a checkpoint can hold, or deleted. The loaders answer
with a model whose values are in range, or with one `error:`-ready line naming the file, never
another exception; the same property test_params_property.py checks for params.yaml."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medseg.model_card import load_checkpoint, save_checkpoint
from medseg.errors import MedsegError
from medseg.model_card import Threshold, write_ensemble
from medseg.onnx_runtime import FORMAT, read_metadata
from medseg.model_loader import load_trained
from tests.tiny_models import PRE, kfold_folder, save_tiny

ANY = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.sampled_from([0, 1, -1, 2, 3]),
                st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6), st.lists(st.integers(), max_size=3),
                st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
MISSING = object()
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MODEL_JSON = {"format": FORMAT, "preprocess": dict(PRE), "threshold": 0.5, "in_channels": 1,
              "input": {"name": "image", "divisor": 255.0}, "output": {"name": "prob"}}


def leaf_paths(obj: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in obj.items():
        out += leaf_paths(value, (*prefix, key)) if isinstance(value, dict) and value else [(*prefix, key)]
    return out


def with_value(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A deep copy of `obj` with the leaf at `path` set to `value` (deleted for MISSING)."""
    out = json.loads(json.dumps(obj))
    node = out
    for part in path[:-1]:
        node = node[part]
    if value is MISSING:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return out


@SETTINGS
@given(path=st.sampled_from(leaf_paths(MODEL_JSON)), value=st.one_of(ANY, st.just(MISSING)))
def test_any_edit_of_model_json(tmp_path, path, value):
    edited = with_value(MODEL_JSON, path, value)
    (tmp_path / "model.json").write_text(json.dumps(edited))
    try:
        meta = read_metadata(tmp_path / "model.json")
    except MedsegError as err:
        assert str(err).startswith(str(tmp_path / "model.json")) and "\n" not in str(err)
        return
    assert 0 <= meta["threshold"] <= 1 and meta["input"]["divisor"] > 0 and math.isfinite(meta["input"]["divisor"])
    assert meta["in_channels"] == meta["preprocess"]["channels"] >= 1 and meta["preprocess"]["size"] >= 1


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return kfold_folder(tmp_path_factory.mktemp("kfold") / "unet", folds=2)


@SETTINGS
@given(key=st.sampled_from(["folds", "threshold", "threshold_source", "run"]), value=st.one_of(ANY, st.just(MISSING)))
def test_any_edit_of_ensemble_json(folder, key, value):
    write_ensemble(folder, 2, Threshold(0.42, "test", True))
    spec = with_value(json.loads((folder / "ensemble.json").read_text()), (key,), value)
    (folder / "ensemble.json").write_text(json.dumps(spec))
    try:
        trained = load_trained(folder)
    except MedsegError as err:
        assert "\n" not in str(err) and str(folder) in str(err)
        return
    assert trained.card.folds == 2 and 0 <= trained.card.threshold.value <= 1


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> dict[str, Any]:
    path = save_tiny(tmp_path_factory.mktemp("ckpt") / "best.pt")
    return torch.load(path, weights_only=True)


HEADER = [("model",), ("model_params",), ("in_channels",), ("threshold",), ("preprocess",),
          *[("preprocess", key) for key in PRE]]


@SETTINGS
@given(path=st.sampled_from(HEADER), value=st.one_of(ANY, st.just(MISSING)))
def test_any_edit_of_a_checkpoint_header(tmp_path, checkpoint, path, value):
    ckpt = dict(checkpoint, preprocess=dict(checkpoint["preprocess"]))
    node = ckpt if len(path) == 1 else ckpt["preprocess"]
    if value is MISSING:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    save_checkpoint(tmp_path / "best.pt", ckpt)
    try:
        trained = load_trained(tmp_path / "best.pt")
        ckpt = load_checkpoint(tmp_path / "best.pt")
    except MedsegError as err:
        assert str(err).startswith(str(tmp_path / "best.pt")) and "\n" not in str(err)
        return
    assert 0 <= trained.card.threshold.value <= 1 and ckpt["in_channels"] >= 1
