"""Several classes through the stage scripts, on a 2D folder dataset whose label maps hold two
nested structures (value 1: a dim square; value 2: a bright square inside it, in half the images):
convert stores codes and per-class counts, split keeps every class in training, every network gets
one output channel per class, and evaluate scores each class and their macro mean."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from medseg.checkpoints import load_checkpoint
from tests.conftest import make_workdir, stage

SIDE, IMAGES = 32, 30
EXCLUSIVE = {"dim": [1], "bright": [2]}
REGIONS = {"whole": [1, 2], "bright": [2]}


def nested_squares(root: Path) -> Path:
    """root/images/*.png with root/masks/*_mask.png label maps (0, 1, 2); intensity tells the classes apart."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(IMAGES):
        label = np.zeros((SIDE, SIDE), np.uint8)
        r, c = rng.integers(2, SIDE - 16, 2)
        label[r:r + 14, c:c + 14] = 1
        if i % 2 == 0:
            label[r + 4:r + 10, c + 4:c + 10] = 2
        image = np.choose(label, [40, 120, 230]).astype(np.float64) + rng.normal(0, 8, label.shape)
        cv2.imwrite(str(root / "images" / f"im{i:02d}.png"), np.clip(image, 0, 255).astype(np.uint8))
        cv2.imwrite(str(root / "masks" / f"im{i:02d}_mask.png"), label)
    return root


def workdir(tmp_path: Path, classes: dict, mode: str) -> Path:
    source = nested_squares(tmp_path / "source")
    edits = {"dataset.name": "folder", "dataset.source": str(source), "dataset.classes": classes,
             "dataset.class_mode": mode, "convert.normalize": "none", "train.epochs": 8, "train.patience": 0,
             "train.batch_size": 8, "train.lr": 0.01, "balance.neg_keep": 1.0, "balance.pos_repeat": 4.0,
             "models.unet.width": 8, "models.attn_unet.width": 8, "models.deeplab.decoder_channels": 16,
             "models.upernet.decoder_channels": 16, "evaluate.resamples": 2000}
    work = make_workdir(tmp_path, edits)
    for module in ("stages.download", "stages.convert", "stages.split", "stages.balance"):
        result = stage(work, module)
        assert result.returncode == 0, f"{module}: {result.stderr[-2000:]}"
    return work


def train(work: Path, model: str, epochs: int | None = None) -> None:
    """The train stage of `model`; with `epochs`, train.epochs set to it first (a model only built and checked)."""
    if epochs is not None:
        params = yaml.safe_load((work / "params.yaml").read_text())
        params["train"]["epochs"] = epochs
        (work / "params.yaml").write_text(yaml.safe_dump(params))
    result = stage(work, "stages.train", model)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def exclusive(tmp_path_factory) -> Path:
    """The whole multi-class pipeline up to evaluate: unet learns (8 epochs), the other three train one
    epoch (their outputs and scoring are checked, not their quality), to keep the suite short."""
    work = workdir(tmp_path_factory.mktemp("exclusive"), EXCLUSIVE, "exclusive")
    train(work, "unet")
    for model in ("attn_unet", "deeplab", "upernet"):
        train(work, model, epochs=1)
    result = stage(work, "stages.evaluate")
    assert result.returncode == 0, result.stderr[-2000:]
    return work


def test_convert_stores_class_codes_and_per_class_counts(exclusive):
    slices = exclusive / "data/slices"
    info = json.loads((slices / "info.json").read_text())
    assert info["classes"] == {"mode": "exclusive", "names": ["dim", "bright"], "values": [[1], [2]]}
    manifest = pd.read_csv(slices / "manifest.csv", dtype={"slice_id": str})
    assert {"class_dim", "class_bright"} <= set(manifest.columns)
    assert (manifest["class_bright"] > 0).sum() == IMAGES // 2 and (manifest["class_dim"] > 0).all()
    codes = cv2.imread(str(slices / "masks" / "im00.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(codes).tolist()) == {0, 1, 2}
    split = pd.read_csv(exclusive / "data/split.csv", dtype={"slice_id": str})
    train_ids = split.loc[split["split"] == "train", "slice_id"]
    assert manifest.set_index("slice_id").loc[train_ids, "class_bright"].gt(0).any()


def test_every_network_has_one_output_per_class_and_scores_above_chance(exclusive):
    for model in ("unet", "attn_unet", "deeplab", "upernet"):
        ckpt = load_checkpoint(exclusive / "data/models" / model / "best.pt")
        head = [t for k, t in ckpt["state_dict"].items() if t.ndim == 4][-1]
        assert head.shape[0] == 3, model  # background + dim + bright
        assert ckpt["threshold_source"].startswith("argmax")
    metrics = json.loads((exclusive / "results/evaluate/unet/metrics.json").read_text())
    assert metrics["class_mode"] == "exclusive" and set(metrics["classes"]) == {"dim", "bright"}
    per_class = [metrics["classes"][c]["dice"] for c in ("dim", "bright")]
    assert metrics["dice"] == pytest.approx(np.mean(pd.read_csv(exclusive / "results/evaluate/unet/per_case.csv")["dice"]))
    assert min(per_class) > 0.3, per_class  # a bright or dim square on a dark field: learnable in 6 epochs
    assert metrics["dice_ci_low"] <= metrics["dice"] <= metrics["dice_ci_high"]
    for c in ("dim", "bright"):
        assert (exclusive / f"results/evaluate/unet/per_case_{c}.csv").exists()
    preds = np.load(exclusive / "data/predictions/unet.npz")
    assert preds["masks"].shape[1] == 2 and preds["probs"].shape[1] == 3
    comparison = json.loads((exclusive / "results/evaluate/comparison.json").read_text())
    assert len(comparison["pairs"]) == 6


def test_pictures_carry_the_classes_and_predict_and_export_refuse_in_one_line(exclusive):
    result = stage(exclusive, "stages.visualize")
    assert result.returncode == 0, result.stderr[-2000:]
    plots = exclusive / "results/plots"
    assert {"pr_curves.png", "forest.png", "case_dice_boxplot.png"} <= {p.name for p in plots.iterdir()}
    overlay = cv2.imread(str(plots / "overlays/unet.png"))
    colours = {tuple(int(v) for v in px) for px in overlay.reshape(-1, 3)[::7]}
    assert (75, 25, 230) in colours or (75, 180, 60) in colours  # a class colour (BGR) is drawn
    for module, args in (("stages.predict", ["--source", str(exclusive / "data/slices/images/im00.png"),
                                              "--out", str(exclusive / "pred")]),
                         ("stages.export", ["--out", str(exclusive / "export")])):
        result = stage(exclusive, module, "--model", str(exclusive / "data/models/unet"), *args)
        assert result.returncode == 2 and "multi-class model (exclusive: dim, bright)" in result.stderr, result.stderr
        assert not (exclusive / "pred").exists() and not (exclusive / "export").exists()


def test_regions_train_one_sigmoid_channel_each_with_its_own_threshold(tmp_path):
    work = workdir(tmp_path, REGIONS, "regions")
    codes = cv2.imread(str(work / "data/slices/masks/im00.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(codes).tolist()) == {0, 1, 3}  # bit 0: whole; bits 0 and 1: bright (inside the whole)
    train(work, "unet")
    ckpt = load_checkpoint(work / "data/models/unet/best.pt")
    assert len(ckpt["class_thresholds"]) == 2 and all(0 <= t <= 1 for t in ckpt["class_thresholds"])
    assert [t for t in ckpt["state_dict"].values() if t.ndim == 4][-1].shape[0] == 2
    assert isinstance(ckpt["state_dict"], dict) and torch.is_tensor(next(iter(ckpt["state_dict"].values())))


def test_a_class_no_label_holds_and_a_binary_only_loss_are_one_line(tmp_path):
    source = nested_squares(tmp_path / "source")
    work = make_workdir(tmp_path, {"dataset.name": "folder", "dataset.source": str(source),
                                   "dataset.classes": {"dim": [1], "ghost": [7]}})
    assert stage(work, "stages.download").returncode == 0
    result = stage(work, "stages.convert")
    assert result.returncode == 2 and "dataset.classes.ghost=[7] matches no label value" in result.stderr
    assert not (work / "data/slices").exists()
