"""Several classes through the stage scripts, on the offline multi-class phantom (phantom_folder: 2D
slices in the folder layout whose label maps hold an organ, 1, and a lesion inside it, 2):
convert stores codes and per-class counts, split keeps every class in training, every network gets
one output channel per class, and evaluate scores each class and their macro mean."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from medseg.model_card import load_checkpoint
from tests.conftest import edited_params, make_workdir, stage
from tests.test_pipeline_e2e import copy_repo

EXCLUSIVE = {"organ": [1], "lesion": [2]}
REGIONS = {"organ_and_lesion": [1, 2], "lesion": [2]}
PHANTOM = {"cases": 10, "depth": 6, "size": 32, "seed": 0}


EDITS = {"dataset.name": "phantom_folder", "dataset.phantom": PHANTOM, "train.epochs": 8, "train.patience": 0,
         "train.batch_size": 8, "train.lr": 0.01, "balance.neg_keep": 1.0, "balance.pos_repeat": 2.0,
         "models.unet.width": 8, "models.attn_unet.width": 8, "models.deeplab.decoder_channels": 16,
         "models.upernet.decoder_channels": 16, "evaluate.resamples": 2000,
         "evaluate.min_volume": 0, "evaluate.largest_volume": False}  # 2D steps: what predict applies to PNGs


def workdir(tmp_path: Path, classes: dict, mode: str, more: dict | None = None) -> Path:
    """A working folder after download (the offline phantom_folder), convert, split and balance;
    `more`: further dotted-key params edits."""
    edits = EDITS | {"dataset.classes": classes, "dataset.class_mode": mode}
    work = make_workdir(tmp_path, edits | (more or {}))
    for module in ("stages.download", "stages.convert", "stages.split", "stages.balance"):
        result = stage(work, module)
        assert result.returncode == 0, f"{module}: {result.stderr[-2000:]}"
    return work


def train(work: Path, model: str, epochs: int | None = None) -> None:
    """The train stage of `model`; with `epochs`, train.epochs set to it first (a model only built and checked)."""
    if epochs is not None:
        params = yaml.safe_load((work / "params.yaml").read_text())
        params["train"]["epochs"] = epochs
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = stage(work, "stages.train", model)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def exclusive(tmp_path_factory) -> Path:
    """`dvc repro` of the whole multi-class pipeline in a copy of the repository: every stage as
    dvc.yaml wires it, unet with 8 epochs, the other three with the same short schedule."""
    edits = EDITS | {"dataset.classes": EXCLUSIVE, "dataset.class_mode": "exclusive"}
    work, env = copy_repo(tmp_path_factory.mktemp("exclusive") / "repo", edited_params(edits))
    result = subprocess.run(["dvc", "repro"], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return work


def test_convert_stores_class_codes_and_per_class_counts(exclusive):
    slices = exclusive / "data/slices"
    info = json.loads((slices / "info.json").read_text())
    assert info["classes"] == {"mode": "exclusive", "names": ["organ", "lesion"], "values": [[1], [2]]}
    manifest = pd.read_csv(slices / "manifest.csv", dtype={"slice_id": str})
    raw = exclusive / "data/raw/phantom_folder/masks"
    for _, row in manifest.iterrows():  # the stored counts are the raw label map's, class by class
        label = cv2.imread(str(raw / f"{row['slice_id'].rsplit('_', 1)[0]}_{int(row['index']):03d}_mask.png"),
                           cv2.IMREAD_UNCHANGED)
        codes = cv2.imread(str(slices / "masks" / f"{row['slice_id']}.png"), cv2.IMREAD_UNCHANGED)
        assert (codes == label).all()  # 32 px phantom, 32 px slices: no resize
        assert row["class_organ"] == (label == 1).sum() and row["class_lesion"] == (label == 2).sum()
    split = pd.read_csv(exclusive / "data/split.csv", dtype={"slice_id": str})
    train_ids = split.loc[split["split"] == "train", "slice_id"]
    assert manifest.set_index("slice_id").loc[train_ids, "class_lesion"].gt(0).any()


def test_every_network_has_one_output_per_class_and_scores_above_chance(exclusive):
    for model in ("unet", "attn_unet", "deeplab", "upernet"):
        ckpt = load_checkpoint(exclusive / "data/models" / model / "best.pt")
        head = [t for k, t in ckpt["state_dict"].items() if t.ndim == 4][-1]
        assert head.shape[0] == 3, model  # background + organ + lesion
        assert ckpt["threshold_source"].startswith("argmax")
    metrics = json.loads((exclusive / "results/evaluate/unet/metrics.json").read_text())
    assert metrics["class_mode"] == "exclusive" and set(metrics["classes"]) == {"organ", "lesion"}
    per_class = [metrics["classes"][c]["dice"] for c in ("organ", "lesion")]
    assert metrics["dice"] == pytest.approx(np.mean(pd.read_csv(exclusive / "results/evaluate/unet/per_case.csv")["dice"]))
    assert min(per_class) > 0.3, per_class  # a grey organ with a bright lesion: learnable in 8 epochs
    assert metrics["dice_ci_low"] <= metrics["dice"] <= metrics["dice_ci_high"]
    for c in ("organ", "lesion"):
        assert (exclusive / f"results/evaluate/unet/per_case_{c}.csv").exists()
    preds = np.load(exclusive / "data/predictions/unet.npz")
    assert preds["masks"].shape[1] == 2 and preds["probs"].shape[1] == 3
    comparison = json.loads((exclusive / "results/evaluate/comparison.json").read_text())
    assert len(comparison["pairs"]) == 6


def test_dvc_tracks_the_classes_and_metrics_show_them(exclusive):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    status = subprocess.run(["dvc", "status"], cwd=exclusive, env=env, capture_output=True, text=True, timeout=300)
    assert "up to date" in status.stdout, status.stdout
    shown = subprocess.run(["dvc", "metrics", "show", "--json"], cwd=exclusive, env=env, capture_output=True,
                           text=True, timeout=300)
    unet = json.loads(shown.stdout)[""]["data"]["results/evaluate/unet/headline.json"]["data"]
    assert unet["dice_ci_low"] <= unet["dice"] <= unet["dice_ci_high"]  # the macro mean over the classes
    full = json.loads((exclusive / "results/evaluate/unet/metrics.json").read_text())
    assert unet["dice"] == full["dice"] and set(full["classes"]) == {"organ", "lesion"}
    assert 0 <= full["classes"]["lesion"]["dice"] <= 1 and "min_area" in full["classes"]["lesion"]


def test_pictures_carry_the_classes(exclusive):
    plots = exclusive / "results/plots"
    assert {"pr_curves.png", "forest.png", "case_dice_boxplot.png"} <= {p.name for p in plots.iterdir()}
    overlay = cv2.imread(str(plots / "overlays/unet.png"))
    colours = {tuple(int(v) for v in px) for px in overlay.reshape(-1, 3)[::7]}
    assert (75, 25, 230) in colours or (75, 180, 60) in colours  # a class colour (BGR) is drawn


def test_predict_and_its_onnx_export_give_the_masks_evaluate_scored(exclusive, tmp_path):
    """predict on the test slices' own PNGs decides and post-processes as evaluate scored (each class's
    min_area from results/evaluate/unet/postprocess.json), so its label maps are evaluate's masks; the
    ONNX export carries the classes, the painting order and the same record, and gives the same maps."""
    test = pd.read_csv(exclusive / "data/split.csv", dtype={"slice_id": str}).query("split == 'test'")
    source = tmp_path / "src"
    source.mkdir()
    for sid in test["slice_id"]:
        (source / f"{sid}.png").write_bytes((exclusive / f"data/slices/images/{sid}.png").read_bytes())
    model = exclusive / "data/models/unet"
    assert stage(exclusive, "stages.export", "--model", str(model), "--out", str(tmp_path / "export")).returncode == 0
    meta = json.loads((tmp_path / "export/model.json").read_text())
    record = json.loads((exclusive / "results/evaluate/unet/postprocess.json").read_text())
    assert meta["classes"]["names"] == ["organ", "lesion"] and meta["output"]["shape"][1] == 3
    assert meta["postprocess"] == record and set(record["steps"]) == {"organ", "lesion"}
    maps = {}
    for name, use in (("torch", model), ("onnx", tmp_path / "export")):
        result = stage(exclusive, "stages.predict", "--model", str(use), "--source", str(source),
                       "--out", str(tmp_path / name))
        assert result.returncode == 0, result.stderr[-2000:]
        assert "post-processing lesion: " in result.stderr and "organ: " in result.stderr
        maps[name] = {sid: cv2.imread(str(tmp_path / name / f"{sid}_mask.png"), cv2.IMREAD_UNCHANGED)
                      for sid in test["slice_id"]}
    scored = np.load(exclusive / "data/predictions/unet.npz")
    masks = dict(zip(scored["slice_id"], scored["masks"]))
    for sid in test["slice_id"]:
        evaluated = np.select([masks[sid][0], masks[sid][1]], [1, 2], 0)
        assert (maps["torch"][sid] == evaluated).mean() > 0.999, sid  # equal but for a float tie at argmax
        assert (maps["torch"][sid] == maps["onnx"][sid]).mean() > 0.999, sid
    result = stage(exclusive, "stages.predict", "--model", str(model), "--source", str(source), "--threshold", "0.4",
                   "--out", str(tmp_path / "cut"))
    assert result.returncode == 2 and "decided by argmax" in result.stderr


def test_a_post_processing_record_of_another_training_is_refused(exclusive, tmp_path):
    record = json.loads((exclusive / "results/evaluate/unet/postprocess.json").read_text())
    stale = tmp_path / "postprocess.json"
    stale.write_text(json.dumps(record | {"checkpoint_sha256": ["0" * 64]}))
    image = next((exclusive / "data/slices/images").iterdir())
    result = stage(exclusive, "stages.predict", "--model", str(exclusive / "data/models/unet"), "--source", str(image),
                   "--postprocess", str(stale), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "chosen for another training than this unet model" in result.stderr
    assert not (tmp_path / "out").exists()


def test_regions_in_k_folds_with_out_of_fold_thresholds_and_a_cv_estimate(tmp_path):
    """Overlapping regions, one sigmoid channel each, trained in 2 patient-level folds: ensemble.json
    holds one out-of-fold threshold per region, evaluate scores the folds' mean on test and the
    out-of-fold cases per class (the CV estimate), and predict writes one mask per region."""
    work = workdir(tmp_path, REGIONS, "regions", {"split.folds": 2, "train.epochs": 4})
    manifest = pd.read_csv(work / "data/slices/manifest.csv", dtype={"slice_id": str})
    sid = manifest.sort_values("class_lesion")["slice_id"].iloc[-1]
    codes = cv2.imread(str(work / f"data/slices/masks/{sid}.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(codes).tolist()) == {0, 1, 3}  # bit 0: organ or lesion; bits 0 and 1: the lesion
    split = pd.read_csv(work / "data/split.csv", dtype={"slice_id": str}).merge(manifest[["slice_id", "class_lesion"]])
    for k in (0, 1):  # every fold trains on lesions and validates on lesions: the rarer region does not vanish
        assert split.query(f"split != 'test' and fold != {k}")["class_lesion"].gt(0).any()
        assert split.query(f"fold == {k}")["class_lesion"].gt(0).any()
    train(work, "unet")
    for model in ("attn_unet", "deeplab", "upernet"):
        train(work, model, epochs=1)
    ensemble = json.loads((work / "data/models/unet/ensemble.json").read_text())
    assert ensemble["folds"] == 2 and "out-of-fold" in ensemble["threshold_source"]
    assert len(ensemble["class_thresholds"]) == 2 and all(0 < t < 1 for t in ensemble["class_thresholds"])
    ckpt = load_checkpoint(work / "data/models/unet/fold_0/best.pt")
    assert [t for t in ckpt["state_dict"].values() if t.ndim == 4][-1].shape[0] == 2
    result = stage(work, "stages.evaluate")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((work / "results/evaluate/unet/metrics.json").read_text())
    assert metrics["class_mode"] == "regions" and metrics["cv"]["folds"] == 2
    oof = pd.read_csv(work / "results/evaluate/unet/per_case_oof.csv")
    assert set(oof["fold"]) == {0, 1} and metrics["cv"]["dice"] == pytest.approx(oof["dice"].mean())
    assert metrics["classes"]["organ_and_lesion"]["dice"] > 0.3
    record = json.loads((work / "results/evaluate/unet/postprocess.json").read_text())
    assert record["class_thresholds"] == ensemble["class_thresholds"] and "out-of-fold" in record["chosen_on"]
    comparison = json.loads((work / "results/evaluate/comparison.json").read_text())
    assert len(comparison["oof_pairs"]) == 6 and set(comparison["classes"]) == {"organ_and_lesion", "lesion"}
    image = work / f"data/slices/images/{sid}.png"
    result = stage(work, "stages.predict", "--model", "data/models/unet", "--source", str(image),
                   "--out", str(tmp_path / "pred"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == [f"{sid}_lesion_mask.png",
                                                                        f"{sid}_organ_and_lesion_mask.png"]


def test_a_class_no_label_holds_is_one_line_and_no_slice_store(tmp_path):
    work = make_workdir(tmp_path, {"dataset.name": "phantom_folder", "dataset.phantom": PHANTOM,
                                   "dataset.classes": {"organ": [1], "ghost": [7]}})
    assert stage(work, "stages.download").returncode == 0
    result = stage(work, "stages.convert")
    assert result.returncode == 2 and "dataset.classes.ghost=[7] matches no label value" in result.stderr
    assert not (work / "data/slices").exists()
