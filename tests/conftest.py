"""Shared test fixtures and helpers; test modules import the plain names with `from tests.conftest import ...`.

REPO, REALDATA        the repository root, and the real-data samples next to it (../shared/realdata)
repo                  fixture: REPO
make_phantom          fixture: make_phantom(kind, root=None, *, cases, depth, size, seed) -> Path, a phantom
                      raw dataset of format kind (msd, lgg, isic, siim), written by the writer that
                      medseg.datasets.registry.DATASETS names for it; without root, one pristine copy per
                      (kind, cases, depth, size, seed) shared by the whole session (copy it before damaging it)
msd_phantom           fixture: the small MSD phantom (4 volumes x 12 slices, 32 px, seed 1) the training tests learn on
write_phantom         the same as a plain function; PHANTOM_KINDS / phantom_dataset map kind -> dataset name
shipped               shipped(SectionClass, **changes): a params section as params.yaml ships it, changed
no_augment            the augment section with every family off
reader                a ReaderConfig as convert hands it to a reader: the shipped CT window, 96 px, binary
read_slices           a raw folder read back slice by slice by the real reader of its format
slice_arrays          slices as the uint8 (images, masks) arrays that training takes
make_workdir, stage   a scratch working folder holding tiny_params() (dataset.phantom = STAGE_PHANTOM) as
                      params.yaml, and a stage script run in it as a subprocess
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import yaml

from medseg.datasets import ReaderConfig, Slice
from medseg.params import AugmentParams, Section
from medseg.datasets.registry import DATASETS, format_for, phantom_writer

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"

# phantom kind -> its dataset name, read off the registry: "medseg.datasets.phantom_lgg" is kind "lgg"
PHANTOM_KINDS: dict[str, str] = {fmt.phantom.rpartition(".phantom_")[2]: name
                                 for name, fmt in DATASETS.items() if fmt.phantom}

S = TypeVar("S", bound=Section)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


# ---------------------------------------------------------------- phantoms


def phantom_dataset(kind: str) -> str:
    """The dataset name of phantom `kind` (msd -> phantom, lgg -> phantom_lgg, ...); a dataset name that
    has a phantom writer is returned as it is."""
    if kind in PHANTOM_KINDS:
        return PHANTOM_KINDS[kind]
    if phantom_writer(kind) is not None:
        return kind
    raise KeyError(f"no phantom {kind!r}; choose one of {', '.join(PHANTOM_KINDS)}")


def write_phantom(kind: str, root: Path, *, cases: int, depth: int, size: int, seed: int) -> Path:
    """Write phantom `kind` under `root` (which need not exist) and return `root`."""
    phantom_writer(phantom_dataset(kind)).write(root, cases=cases, depth=depth, size=size, seed=seed)
    return root


@pytest.fixture(scope="session")
def make_phantom(tmp_path_factory) -> Callable[..., Path]:
    """make_phantom(kind, root=None, *, cases, depth, size, seed) -> Path.

    With `root`, writes the phantom there and returns `root`. Without, returns the session's pristine
    copy for these arguments, written on first use into a fresh folder named after the dataset
    (…/phantom, …/phantom_lgg, …): read it, or copy it before changing anything."""
    written: dict[tuple, Path] = {}

    def make(kind: str, root: Path | None = None, *, cases: int, depth: int, size: int, seed: int) -> Path:
        sizes = {"cases": cases, "depth": depth, "size": size, "seed": seed}
        if root is not None:
            return write_phantom(kind, root, **sizes)
        name = phantom_dataset(kind)
        key = (name, cases, depth, size, seed)
        if key not in written:
            folder = tmp_path_factory.mktemp(f"{name}-{cases}x{depth}x{size}-seed{seed}") / name
            written[key] = write_phantom(name, folder, **sizes)
        return written[key]

    return make


@pytest.fixture(scope="session")
def msd_phantom(make_phantom) -> Path:
    """The small MSD phantom the training tests learn on: 4 volumes of 12 slices, 32 px, seed 1."""
    return make_phantom("msd", cases=4, depth=12, size=32, seed=1)


def shipped(section: type[S], **changes: Any) -> S:
    """The typed params section `section` as the shipped params.yaml holds it, with `changes` (checked)."""
    return section.load(REPO / "params.yaml").with_values(**changes)


def no_augment() -> AugmentParams:
    return shipped(AugmentParams, **{k: 0.0 for k in AugmentParams.schema() if k != "fill_channel"})


def reader(**values: Any) -> ReaderConfig:
    """What convert hands a reader (medseg.datasets.ReaderConfig): params.yaml's CT window, 96 px slices
    and the binary foreground, with `values` changed."""
    return ReaderConfig(**({"size": 96, "window_level": -600, "window_width": 1500} | values))


def read_slices(root: Path, kind: str, cfg: ReaderConfig | None = None) -> list[Slice]:
    """Every slice under the raw folder `root`, case by case, read by the real reader of format `kind`
    with `cfg` (default: reader())."""
    fmt = format_for(phantom_dataset(kind))
    return [s for case in fmt.list_cases(root) for s in fmt.read_case(case, cfg or reader())]


def slice_arrays(slices: Iterable[Slice]) -> tuple[np.ndarray, np.ndarray]:
    """(images, masks): (N, H, W, C) uint8 images round(x * 255) and (N, H, W) uint8 {0, 1} masks."""
    slices = list(slices)
    images = np.stack([np.round(s.image * 255).astype(np.uint8) for s in slices])
    masks = np.stack([s.mask.astype(np.uint8) for s in slices])
    return images, masks


# ---------------------------------------------------------------- stage scripts in a scratch folder

STAGE_PHANTOM = {"cases": 3, "depth": 4, "size": 32, "seed": 0}  # dataset.phantom of tiny_params()


def tiny_params() -> dict[str, Any]:
    """params.yaml of the repository, shrunk: the MSD phantom of STAGE_PHANTOM, 32 px, one worker."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["dataset"].update(name="phantom", source="kaggle")
    params["dataset"]["phantom"].update(STAGE_PHANTOM)
    params["convert"].update(size=32, workers=1, on_error="fail")
    params["split"]["fractions"] = {"train": 0.6, "val": 0.2, "test": 0.2}  # fixed: the tiny set, not the default
    return params


def make_workdir(tmp_path: Path, edits: dict[str, Any] | None = None) -> Path:
    """A scratch working folder holding params.yaml with dotted-key `edits` applied."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text(yaml.safe_dump(edited_params(edits), sort_keys=False))
    return work


def edited_params(edits: dict[str, Any] | None = None) -> dict[str, Any]:
    """tiny_params() with dotted-key `edits` applied (e.g. {"train.epochs": 2})."""
    params = tiny_params()
    for dotted, value in (edits or {}).items():
        *parents, leaf = dotted.split(".")
        section = params
        for part in parents:
            section = section[part]
        section[leaf] = value
    return params


def stage(work: Path, module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m module args` in `work`; `env` (default os.environ) is the whole environment."""
    env = {**(os.environ if env is None else env), "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1",
           "DVC_NO_ANALYTICS": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
