"""End to end: `dvc repro` on a tiny phantom config in a temporary copy of the repository."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image
import pytest
import torch
import yaml

from medseg.model_card import load_checkpoint
from medseg.preprocess import upright
from tests.conftest import REPO
MODELS = ("unet", "attn_unet", "deeplab", "upernet")


def tiny_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["dataset"]["phantom"].update(cases=8, depth=12, size=48, seed=0)
    params["convert"].update(size=48, workers=1)
    params["split"]["fractions"] = {"train": 0.6, "val": 0.2, "test": 0.2}  # the tiny set: not the default
    params["train"].update(epochs=5, batch_size=8, patience=0, lr=0.01)
    params["balance"].update(pos_repeat=4.0)
    params["models"]["unet"]["width"] = 8
    params["models"]["attn_unet"]["width"] = 8
    params["models"]["deeplab"]["decoder_channels"] = 32
    params["models"]["upernet"]["decoder_channels"] = 32
    params["evaluate"]["pr_max_pixels"] = 100_000
    return params


def smaller_params(epochs: int) -> dict:
    """tiny_params() made cheaper still (8 slices of 32 px per volume), for modules that train more often."""
    params = tiny_params()
    params["dataset"]["phantom"].update(depth=8, size=32)
    params["convert"]["size"] = 32
    params["train"]["epochs"] = epochs
    return params


def run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def copy_repo(dest: Path, params: dict | None = None) -> tuple[Path, dict]:
    """The repository's tracked files (no data, results or dvc.lock) with `params` (default
    tiny_params()), committed in a fresh git repository at `dest`; and the environment to run dvc there."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\n")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file() and not rel.startswith(("data/", "results/")) and rel != "dvc.lock":
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / "data").mkdir(exist_ok=True)
    shutil.copy2(REPO / "data/.gitignore", dest / "data/.gitignore")
    (dest / "params.yaml").write_text(yaml.safe_dump(params or tiny_params(), sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "NO_ALBUMENTATIONS_UPDATE": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    run(["git", "init", "-q"], dest, env)
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-qm", "copy"], dest, env)
    return dest, env


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> tuple[Path, dict]:
    dest, env = copy_repo(tmp_path_factory.mktemp("e2e") / "repo")
    run(["dvc", "repro"], dest, env)
    return dest, env


@pytest.mark.e2e
def test_outputs_exist_and_metrics_are_sane(repo_copy):
    dest, env = repo_copy
    manifest = pd.read_csv(dest / "data/slices/manifest.csv")
    assert {"slice_id", "group", "source", "fg_pixels"} <= set(manifest.columns)
    split = pd.read_csv(dest / "data/split.csv")
    assert set(split["split"]) == {"train", "val", "test"}
    assert (split.groupby("group")["split"].nunique() == 1).all()
    test_ids = set(split.loc[split.split == "test", "slice_id"])
    test_fg = manifest[manifest.slice_id.isin(test_ids)]
    prevalence = test_fg.fg_pixels.sum() / (len(test_fg) * 48 * 48)
    for name in MODELS:
        assert (dest / f"data/models/{name}/best.pt").exists()
        assert (dest / f"data/models/{name}/last.pt").exists()
        m = json.loads((dest / f"results/evaluate/{name}/metrics.json").read_text())
        for key in ("dice", "iou", "ap"):
            assert m[key] is not None and 0.0 <= m[key] <= 1.0 and math.isfinite(m[key]), (name, key, m)
        assert m["iou"] <= m["dice"] + 1e-9
        assert m["ap"] > 2 * prevalence, (name, m["ap"], prevalence)  # better than chance ranking
        for key in ("dice", "iou", "dice_fg"):  # every headline number with its CI, bracketing it
            assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"], (name, key, m)
        assert m["torch"] == torch.__version__ and m["train_amp"] in ("fp32", "bfloat16")
        cost = json.loads((dest / f"results/evaluate/{name}/compute.json").read_text())
        assert cost["parameters"] > 1000 and cost["gflops_per_image"] > 0 and cost["epochs"] == 5
        assert cost["train_seconds"] > 0 and "infer_images_per_s" not in cost  # a timing: not in a DVC output
        assert json.loads((dest / "results/timings/evaluate.json").read_text())[name]["infer_images_per_s"] > 0
        assert json.loads((dest / f"results/evaluate/{name}/headline.json").read_text()) == {
            k: m[k] for k in ("dice", "dice_ci_low", "dice_ci_high", "dice_fg", "ap")}
        log = pd.read_csv(dest / f"results/train/{name}/plots/metrics/train_loss.tsv", sep="\t")
        assert len(log) == 5 and log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
        assert (dest / f"results/plots/overlays/{name}.png").stat().st_size > 1000
    summary = (dest / "results/evaluate/summary.md").read_text()
    assert sum(line.startswith("| unet |") for line in summary.splitlines()) == 2  # scores and compute rows
    pairs = json.loads((dest / "results/evaluate/comparison.json").read_text())["pairs"]
    assert len(pairs) == 6 and all(p["cases"] == m["cases"] for p in pairs)
    assert "unet − attn_unet" in summary and any(words in summary for words in (
        "differs significantly", "Significant at", "not meaningful at this size"))
    assert (dest / "results/plots/forest.png").stat().st_size > 1000


@pytest.mark.e2e
def test_repro_leaves_everything_up_to_date(repo_copy):
    dest, env = repo_copy
    status = run(["dvc", "status"], dest, env).stdout
    assert "up to date" in status, status
    table = run(["dvc", "metrics", "show"], dest, env).stdout  # the headline per model, one row each
    assert max(len(line) for line in table.splitlines()) <= 120, table
    for name in MODELS:
        assert f"results/evaluate/{name}/headline.json" in table


@pytest.mark.e2e
def test_predict_gives_the_masks_evaluate_scored_on_the_raw_test_volumes(repo_copy, tmp_path):
    """predict on the raw NIfTI of every test case, with evaluate's post-processing record (3D steps
    included), writes exactly the masks evaluate scored (data/predictions/unet.npz), voxel for voxel."""
    dest, env = repo_copy
    split = pd.read_csv(dest / "data/split.csv", dtype={"slice_id": str})
    groups = sorted(split.loc[split["split"] == "test", "group"].unique())
    source = tmp_path / "src"
    source.mkdir()
    for group in groups:
        shutil.copy(dest / f"data/raw/phantom/imagesTr/{group}.nii.gz", source)
    result = run([sys.executable, "-m", "stages.predict", "--model", "data/models/unet/best.pt", "--source",
                  str(source), "--out", str(tmp_path / "out")], dest, env)
    assert "from results/evaluate/unet/postprocess.json" in result.stderr
    scored = np.load(dest / "data/predictions/unet.npz")
    masks = dict(zip(scored["slice_id"], scored["masks"]))
    for group in groups:
        volume = np.asarray(nib.as_closest_canonical(nib.load(tmp_path / f"out/{group}_mask.nii.gz")).dataobj) > 0
        ids = sorted(s for s in masks if s.startswith(f"{group}_"))
        assert len(ids) == volume.shape[2]
        for k, sid in enumerate(ids):
            assert (upright(volume[..., k]) == masks[sid]).all(), sid


@pytest.mark.e2e
def test_plots_page_renders_offline(repo_copy):
    dest, env = repo_copy
    run(["dvc", "plots", "show", "-o", "plots_page"], dest, env)
    page = (dest / "plots_page/index.html").read_text()
    assert "cdn.jsdelivr" not in page and "<script src=" not in page
    for chart in ("train_loss", "val_loss", "val_dice"):
        assert f'<div id = "{chart}"' in page
    for name in MODELS:  # one line per model in the training-curve charts
        assert f'"filename": "{name}/folds.tsv"' in page
        assert (dest / f"plots_page/static/workspace_results_plots_overlays_{name}.png").exists()
    assert (dest / "plots_page/static/workspace_results_plots_pr_curves.png").exists()  # with each model's AP
    assert page.count('"as": "model"') >= 3  # the repo's template: colour by model, dash by experiment
    assert (dest / "plots_page/static/workspace_results_plots_forest.png").exists()
    static = [p.name for p in (dest / "plots_page/static").iterdir()]
    assert not [n for n in static if "val_predictions" in n]  # no thumbnail per epoch on the page
    for name in MODELS:  # one figure per model: its val grid at the first, a middle and the last epoch
        assert f"workspace_results_plots_training_{name}.png" in static
    images = [Image.open(dest / "plots_page/static" / n).size for n in static]
    assert max(width for width, _ in images) <= 1400, images  # every figure fits a 1,400 px page



def _wait_for_new_checkpoint(path: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Return as soon as `path` is replaced (its first checkpoint of this run); fail if the run ends first."""
    before = path.stat().st_mtime_ns
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.stat().st_mtime_ns != before:
            return
        assert proc.poll() is None, "training ended before its first checkpoint could be caught"
        time.sleep(0.01)
    raise AssertionError(f"no new {path} within {timeout} s")


@pytest.mark.e2e
def test_sigkilled_training_resumes_under_dvc_repro_to_the_same_result(repo_copy):
    """Runs last in this module: it re-trains unet, so dvc.lock afterwards is this test's business."""
    dest, env = repo_copy
    reference = json.loads((dest / "results/train/unet/metrics.json").read_text())
    scored = (dest / "results/evaluate/unet/metrics.json").read_bytes()
    reference_best = load_checkpoint(dest / "data/models/unet/best.pt")
    last = dest / "data/models/unet/last.pt"
    with open(dest / "killed.log", "w") as log:
        proc = subprocess.Popen(["dvc", "repro", "--force", "--single-item", "train_unet"], cwd=dest, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for_new_checkpoint(last, proc)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    state = load_checkpoint(last)["train_state"]
    assert not state["finished"] and 1 <= state["epoch"] < 5, state

    resumed = run(["dvc", "repro", "--single-item", "train_unet"], dest, env)
    output = resumed.stdout + resumed.stderr
    assert f"resuming unet from data/models/unet/last.pt after epoch {state['epoch']}" in output, output[-3000:]
    assert json.loads((dest / "results/train/unet/metrics.json").read_text()) == reference
    curve = pd.read_csv(dest / "results/train/unet/plots/metrics/val_dice.tsv", sep="\t")
    assert curve["step"].tolist() == [0, 1, 2, 3, 4]  # each epoch logged once, none lost or repeated
    best = load_checkpoint(dest / "data/models/unet/best.pt")
    assert best["threshold"] == reference_best["threshold"] and best["epoch"] == reference_best["epoch"]
    for key, tensor in reference_best["state_dict"].items():
        assert torch.equal(best["state_dict"][key], tensor), key
    run(["dvc", "repro", "evaluate"], dest, env)  # trained twice (once killed), scored again:
    assert (dest / "results/evaluate/unet/metrics.json").read_bytes() == scored  # byte for byte
