"""Fixtures and helpers of the bad-input suites (tests/stages/test_bad_*.py), which run the real
stage scripts in scratch working folders (tests.conftest.make_workdir, stage).

stage_phantoms    fixture: stage_phantoms(name) -> the pristine raw folder of phantom `name` at STAGE_PHANTOM sizes
tiny_checkpoint   fixture: an untrained unet best.pt (32 px, 1 channel) that predict takes
clean             fixture: clean(name, prepare=None) -> converted(...) of an undamaged phantom, once per module
pipeline          fixture: pipeline(tmp_path, edits=None) -> a working folder after convert, split and balance
converted         (manifest, images, masks) of a finished convert
convert_ok        run convert, asserting exit 0
dead_pid          the id of a process that has ended (for the temp folders of a killed run)
"""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import pandas as pd
import pytest

from tests.conftest import STAGE_PHANTOM, make_workdir, stage

PIPELINE_PHANTOM = {"cases": 8, "depth": 4, "size": 32, "seed": 0}  # enough positive groups for every split


def converted(work: Path) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """(manifest, images, masks) of a finished convert in `work`, the PNGs by slice id."""
    manifest = pd.read_csv(work / "data/slices/manifest.csv", dtype={"slice_id": str, "group": str})

    def read(folder: str) -> dict[str, Any]:
        return {s: cv2.imread(str(work / "data/slices" / folder / f"{s}.png"), cv2.IMREAD_UNCHANGED)
                for s in manifest["slice_id"]}

    return manifest, read("images"), read("masks")


def convert_ok(work: Path) -> subprocess.CompletedProcess:
    result = stage(work, "stages.convert")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def raw_workdir(tmp_path: Path, raw: Path, name: str, edits: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """(work, its raw folder): a working folder for dataset `name` holding a copy of `raw`."""
    work = make_workdir(tmp_path, {"dataset.name": name, **(edits or {})})
    shutil.copytree(raw, work / "data/raw" / name)
    return work, work / "data/raw" / name


@pytest.fixture(scope="session")
def stage_phantoms(make_phantom) -> Callable[[str], Path]:
    return lambda name: make_phantom(name, **STAGE_PHANTOM)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from medseg.model_card import save_checkpoint
    from models import build_model

    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    pre = {"size": 32, "channels": 1, "window_level": -600, "window_width": 1500, "dataset": "phantom"}
    save_checkpoint(path, {"model": "unet", "model_params": {"width": 4}, "in_channels": 1,
                           "state_dict": build_model("unet", 1, width=4).state_dict(), "preprocess": pre,
                           "threshold": 0.5})
    return path


@pytest.fixture(scope="module")
def clean(tmp_path_factory, stage_phantoms) -> Callable[..., tuple]:
    done: dict[tuple, tuple] = {}

    def get(name: str, prepare: Callable[[Path], None] | None = None) -> tuple:
        if (name, prepare) not in done:
            work, raw = raw_workdir(tmp_path_factory.mktemp(f"clean-{name}"), stage_phantoms(name), name)
            if prepare is not None:
                prepare(raw)
            convert_ok(work)
            done[name, prepare] = converted(work)
        return done[name, prepare]

    return get


@pytest.fixture(scope="session")
def pipeline_done(tmp_path_factory, make_phantom) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    work, _ = raw_workdir(root, make_phantom("msd", **PIPELINE_PHANTOM), "phantom")
    for module in ("stages.convert", "stages.split", "stages.balance"):
        result = stage(work, module)
        assert result.returncode == 0, result.stderr[-3000:]
    return work


@pytest.fixture
def pipeline(pipeline_done) -> Callable[..., Path]:
    def copy(tmp_path: Path, edits: dict[str, Any] | None = None) -> Path:
        work = tmp_path / "work"
        shutil.copytree(pipeline_done, work)
        (tmp_path / "params").mkdir()
        shutil.copy(make_workdir(tmp_path / "params", edits) / "params.yaml", work / "params.yaml")
        return work
    return copy
