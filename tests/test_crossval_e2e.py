"""End to end with `split.folds: 2`: `dvc exp run -S split.folds=2` on a tiny phantom in a
temporary copy of the repository trains two fold models per network, scores their ensemble on
the test split and the out-of-fold cases, and resumes a run killed in its second fold."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from medseg.model_card import load_checkpoint
from tests.test_pipeline_e2e import MODELS, copy_repo, run, smaller_params

FOLDS, EPOCHS = 2, 3


@pytest.fixture(scope="module")
def folds_copy(tmp_path_factory) -> tuple[Path, dict, str]:
    dest, env = copy_repo(tmp_path_factory.mktemp("cv") / "repo", smaller_params(EPOCHS))
    run(["dvc", "repro", "convert"], dest, env)  # upstream done once, as in a repo with results
    output = run(["dvc", "exp", "run", "-S", f"split.folds={FOLDS}"], dest, env)
    return dest, env, output.stdout + output.stderr


@pytest.mark.e2e
def test_folds_rerun_split_onward_only(folds_copy):
    dest, env, output = folds_copy
    for stage in ("download", "convert"):
        assert f"Stage '{stage}' didn't change, skipping" in output, output[-3000:]
    for stage in ("split", "balance", *(f"train_{m}" for m in MODELS), "evaluate", "visualize"):
        assert f"Running stage '{stage}'" in output, stage
    assert "up to date" in run(["dvc", "status"], dest, env).stdout


@pytest.mark.e2e
def test_fold_assignment_checkpoints_and_curves(folds_copy):
    dest, _, _ = folds_copy
    split = pd.read_csv(dest / "data/split.csv")
    assert set(split["split"]) == {"train", "test"} and set(split["fold"]) == {-1, 0, 1}
    assert (split.groupby("group")["fold"].nunique() == 1).all()
    assert (split.loc[split.split == "test", "fold"] == -1).all()
    for name in MODELS:
        folder = dest / "data/models" / name
        assert sorted(p.name for p in folder.iterdir()) == ["ensemble.json", "fold_0", "fold_1"]
        ensemble = json.loads((folder / "ensemble.json").read_text())
        assert ensemble["folds"] == FOLDS and 0 < ensemble["threshold"] < 1
        for k in range(FOLDS):
            best = load_checkpoint(folder / f"fold_{k}/best.pt")
            assert best["fold"] == k and best["folds"] == FOLDS and "threshold_source" in best
            assert (folder / f"fold_{k}/last.pt").exists()
        curves = pd.read_csv(dest / f"results/train/{name}/folds.tsv", sep="\t")
        assert sorted(curves["fold"].unique()) == [0, 1] and len(curves) == FOLDS * EPOCHS
        assert (dest / f"results/train/{name}/fold_1/plots/metrics/val_dice.tsv").exists()


@pytest.mark.e2e
def test_cv_estimate_and_ensemble_test_score(folds_copy):
    dest, env, _ = folds_copy
    split = pd.read_csv(dest / "data/split.csv")
    pooled, tested = split[split.fold >= 0]["group"].nunique(), split[split.fold < 0]["group"].nunique()
    for name in MODELS:
        m = json.loads((dest / f"results/evaluate/{name}/metrics.json").read_text())
        cv = m["cv"]
        assert cv["folds"] == FOLDS and cv["cases"] == pooled and m["cases"] == tested
        assert cv["dice_ci_low"] <= cv["dice"] <= cv["dice_ci_high"]
        oof = pd.read_csv(dest / f"results/evaluate/{name}/per_case_oof.csv")
        assert len(oof) == pooled and set(oof["fold"]) == {0, 1}
        per_fold = oof.groupby("fold")["dice"].mean()
        assert cv["fold_dice_mean"] == pytest.approx(per_fold.mean(), abs=1e-5)  # the CSV holds 6 decimals
        assert cv["fold_dice_sd"] == pytest.approx(per_fold.std(ddof=1), abs=1e-5)
        assert m["dice_ci_low"] <= m["dice"] <= m["dice_ci_high"]
        assert json.loads((dest / f"results/evaluate/{name}/compute.json").read_text())["members"] == FOLDS
    report = json.loads((dest / "results/evaluate/comparison.json").read_text())
    assert len(report["pairs"]) == 6 and len(report["oof_pairs"]) == 6
    assert all(p["cases"] == pooled for p in report["oof_pairs"])
    assert "## Cross-validation" in (dest / "results/evaluate/summary.md").read_text()
    page = run(["dvc", "plots", "show", "-o", "plots_page"], dest, env)
    assert page.returncode == 0 and '"filename": "unet/folds.tsv"' in (dest / "plots_page/index.html").read_text()


@pytest.mark.e2e
def test_predict_with_the_fold_ensemble(folds_copy, tmp_path):
    dest, env, _ = folds_copy
    source = tmp_path / "in"
    source.mkdir()
    image = cv2.imread(str(next((dest / "data/slices/images").glob("*.png"))), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(source / "slice.png"), image)
    out = tmp_path / "out"
    run([sys.executable, "-m", "stages.predict", "--model", "data/models/unet", "--source", str(source),
         "--out", str(out)], dest, env)
    masks = list(out.rglob("*mask*.png"))
    assert len(masks) == 1 and cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED).shape == image.shape[:2]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        assert proc.poll() is None, f"training ended before {path} was written"
        time.sleep(0.01)
    raise AssertionError(f"no {path} within {timeout} s")


@pytest.mark.e2e
def test_killed_in_the_second_fold_resumes_there(folds_copy):
    """Runs last in this module: it re-trains unet's second fold."""
    dest, env, _ = folds_copy
    fold1 = dest / "data/models/unet/fold_1"
    reference = load_checkpoint(fold1 / "best.pt")
    first_fold = (dest / "data/models/unet/fold_0/best.pt").read_bytes()
    for name in ("best.pt", "last.pt"):  # as if the earlier run had been killed before fold 1 began
        (fold1 / name).unlink()
    with open(dest / "killed.log", "w") as log:
        proc = subprocess.Popen(["dvc", "repro", "--force", "--single-item", "train_unet"], cwd=dest, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for(fold1 / "last.pt", proc)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    state = load_checkpoint(fold1 / "last.pt")["train_state"]
    assert not state["finished"] and 1 <= state["epoch"] < EPOCHS, state
    resumed = run(["dvc", "repro", "--single-item", "train_unet"], dest, env)
    output = resumed.stdout + resumed.stderr
    assert "data/models/unet/fold_0 already holds this run, finished; kept" in output, output[-3000:]
    assert f"resuming unet from data/models/unet/fold_1/last.pt after epoch {state['epoch']}" in output
    assert (dest / "data/models/unet/fold_0/best.pt").read_bytes() == first_fold  # fold 0 not retrained
    best = load_checkpoint(fold1 / "best.pt")
    assert best["epoch"] == reference["epoch"] and best["threshold"] == reference["threshold"]
    for key, tensor in reference["state_dict"].items():
        assert torch.equal(best["state_dict"][key], tensor), key
    curve = pd.read_csv(dest / "results/train/unet/fold_1/plots/metrics/val_dice.tsv", sep="\t")
    assert curve["step"].tolist() == list(range(EPOCHS))
    assert np.isfinite(curve["val_dice"]).all()
