"""Bad input, second round (issue 18), family 2 through the real `train` stage: a failing run never
costs the user a model. The previous best.pt and dvclive log stay until the new run has finished its
first epoch; a last.pt that cannot be read is reported and the run starts over instead of stopping.
A failure is injected by running stages.train under `python -c` with one function replaced by a
hard exit (os._exit: no cleanup runs, as after a kill).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medseg.model_card import load_checkpoint
from tests.conftest import REPO, make_workdir, stage
from tests.stages.test_bad_inputs import tree, truncate

FAST = {"train.epochs": 2, "train.patience": 0, "train.batch_size": 4, "models.unet.width": 4, "train.device": "cpu"}
KILL_AT = """
import os, runpy, sys
import medseg.training as training
calls = []
real = getattr(training, {name!r})
def killed(*args, **kwargs):
    calls.append(1)
    if len(calls) == {call}:
        os._exit(137)
    return real(*args, **kwargs)
setattr(training, {name!r}, killed)
sys.argv = ["stages.train", "unet"]
runpy.run_module("stages.train", run_name="__main__")
"""


def killed_train(work: Path, name: str, call: int) -> subprocess.CompletedProcess:
    """stages.train unet, killed on the `call`-th call of medseg.training.<name>."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1", "DVC_NO_ANALYTICS": "1"}
    return subprocess.run([sys.executable, "-c", KILL_AT.format(name=name, call=call)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory, pipeline_done) -> Path:
    work = tmp_path_factory.mktemp("trained") / "work"
    shutil.copytree(pipeline_done, work)
    with_params(work, work.parent, {})
    result = stage(work, "stages.train", "unet")
    assert result.returncode == 0, result.stderr[-3000:]
    return work


@pytest.fixture
def trained(tmp_path, trained_once) -> Path:
    """A working folder with a finished unet run: data/models/unet and results/train/unet."""
    work = tmp_path / "work"
    shutil.copytree(trained_once, work)
    return work


def outputs(work: Path) -> dict[str, dict[str, bytes | None]]:
    return {folder: tree(work / folder) for folder in ("data/models/unet", "results/train/unet")}


def with_params(work: Path, tmp_path: Path, edits: dict) -> None:
    """params.yaml of `work`: FAST plus `edits` (written through a scratch folder under `tmp_path`)."""
    (tmp_path / "edited").mkdir()
    (work / "params.yaml").write_text((make_workdir(tmp_path / "edited", {**FAST, **edits}) / "params.yaml").read_text())


def test_run_killed_before_its_first_epoch_keeps_the_previous_model_and_log(tmp_path, trained):
    """Before: best.pt was deleted and results/train/unet wiped at start-up, before any epoch."""
    before = outputs(trained)
    with_params(trained, tmp_path, {"train.lr": 0.01})  # another run: last.pt cannot be resumed
    result = killed_train(trained, "train_epoch", call=1)
    assert result.returncode == 137, result.stderr[-3000:]
    assert outputs(trained) == before


def test_run_killed_after_its_first_epoch_holds_its_own_best(tmp_path, trained):
    old = load_checkpoint(trained / "data/models/unet/best.pt")
    with_params(trained, tmp_path, {"train.lr": 0.01})
    result = killed_train(trained, "train_epoch", call=2)
    assert result.returncode == 137, result.stderr[-3000:]
    best, last = (load_checkpoint(trained / f"data/models/unet/{n}.pt") for n in ("best", "last"))
    assert last["train_state"]["epoch"] == 1 and best["epoch"] == 1 and "threshold_source" not in best
    assert any((best["state_dict"][k] != old["state_dict"][k]).any() for k in old["state_dict"])
    steps = (trained / "results/train/unet/plots/metrics/val_dice.tsv").read_text().splitlines()
    assert len(steps) == 2  # header + the new run's epoch 1: the old log went when the new one began
    result = stage(trained, "stages.train", "unet")  # and the next run resumes it
    assert result.returncode == 0 and "resuming unet" in result.stderr and "after epoch 1" in result.stderr


@pytest.mark.parametrize("damage", ["truncated", "a_best_pt"])
def test_unreadable_last_pt_is_reported_and_the_run_starts_over(tmp_path, trained, damage):
    """Before: the stage stopped on the unreadable last.pt (or a traceback) until the user deleted it."""
    last = trained / "data/models/unet/last.pt"
    if damage == "truncated":
        truncate(last)
    else:
        last.write_bytes((trained / "data/models/unet/best.pt").read_bytes())
    result = stage(trained, "stages.train", "unet")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data/models/unet/last.pt" in result.stderr and "cannot resume from it, starting over" in result.stderr
    state = load_checkpoint(last)["train_state"]
    assert state["finished"] and state["epoch"] == FAST["train.epochs"]
    assert "threshold_source" in load_checkpoint(trained / "data/models/unet/best.pt")
