"""The real BraTS 2013 case (../shared/realdata/brats_multiclass/; skipped where it is absent) through
the multi-class pipeline in the Decathlon layout (FLAIR + T1c as two channels, the label volume
0-4): as BraTS' three overlapping regions (whole tumour, tumour core, enhancing tumour) to evaluate,
and as exclusive labels through convert and train. One patient cannot be split by patient, so its
tumour-bearing slices are cut into four slabs that stand in for four cases (two train, one val,
one test): a check that the real labels flow through, not a result."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tests.conftest import REALDATA, make_workdir, stage
from tests.stages.test_multiclass import train

CASE = REALDATA / "brats_multiclass" / "brats_2013_pat0001_1"
SLABS, SLAB, FIRST = 4, 20, 25  # slices 25-104 hold the tumour (29-102)
REGIONS = {"whole_tumour": [1, 2, 3, 4], "core": [1, 3, 4], "enhancing": [4]}
EXCLUSIVE = {"necrosis_or_non_enhancing": [1, 3], "edema": [2], "enhancing": [4]}
pytestmark = pytest.mark.skipif(not CASE.is_dir(), reason="../shared/realdata/brats_multiclass is absent")


def msd_slabs(root: Path) -> Path:
    """The case as a Decathlon task of four slab 'cases': imagesTr (FLAIR, T1c as 4D) + labelsTr + dataset.json."""
    flair, t1c = (nib.load(CASE / f"{m}_subtrMeanDivStd.nii.gz") for m in ("Flair", "T1c"))
    label = nib.load(CASE / "OTMultiClass.nii.gz")
    image = np.stack([np.asarray(flair.dataobj), np.asarray(t1c.dataobj)], axis=3).astype(np.float32)
    labels = np.asarray(label.dataobj).astype(np.uint8)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for k in range(SLABS):
        z = slice(FIRST + k * SLAB, FIRST + (k + 1) * SLAB)
        nib.save(nib.Nifti1Image(image[:, :, z], flair.affine), root / "imagesTr" / f"brats_{k:03d}.nii.gz")
        nib.save(nib.Nifti1Image(labels[:, :, z], label.affine), root / "labelsTr" / f"brats_{k:03d}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "name": "BraTS2013 pat0001 slabs", "modality": {"0": "FLAIR", "1": "T1c"},
        "labels": {"0": "background", "1": "necrosis", "2": "edema", "3": "non-enhancing", "4": "enhancing"}}))
    return root


def workdir(tmp_path: Path, classes: dict, mode: str) -> Path:
    edits = {"dataset.name": "msd", "dataset.source": str(msd_slabs(tmp_path / "task")), "dataset.classes": classes,
             "dataset.class_mode": mode, "convert.size": 64, "split.fractions": {"train": 0.5, "val": 0.25, "test": 0.25},
             "train.epochs": 6, "train.patience": 0, "train.batch_size": 8, "train.lr": 0.01,
             "balance.neg_keep": 1.0, "balance.pos_repeat": 1.0, "models.unet.width": 8, "models.attn_unet.width": 8,
             "models.deeplab.decoder_channels": 16, "models.upernet.decoder_channels": 16, "evaluate.resamples": 2000}
    work = make_workdir(tmp_path, edits)
    for module in ("stages.download", "stages.convert", "stages.split", "stages.balance"):
        result = stage(work, module)
        assert result.returncode == 0, f"{module}: {result.stderr[-2000:]}"
    return work


def test_brats_as_three_overlapping_regions_through_evaluate(tmp_path):
    work = workdir(tmp_path, REGIONS, "regions")
    manifest = pd.read_csv(work / "data/slices/manifest.csv", dtype={"slice_id": str})
    assert len(manifest) == SLABS * SLAB and manifest["group"].nunique() == SLABS
    # nested regions: every enhancing pixel is core, every core pixel whole tumour
    assert (manifest["class_enhancing"] <= manifest["class_core"]).all()
    assert (manifest["class_core"] <= manifest["class_whole_tumour"]).all()
    assert manifest["class_enhancing"].gt(0).sum() > 20
    train(work, "unet")
    for model in ("attn_unet", "deeplab", "upernet"):
        train(work, model, epochs=1)
    result = stage(work, "stages.evaluate")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((work / "results/evaluate/unet/metrics.json").read_text())
    assert metrics["class_mode"] == "regions" and set(metrics["classes"]) == set(REGIONS)
    whole = metrics["classes"]["whole_tumour"]["dice"]
    assert whole > 0.3, metrics["classes"]  # the FLAIR-bright whole tumour after six short epochs
    summary = (work / "results/evaluate/summary.md").read_text()
    assert "## Per class" in summary and "| unet | enhancing |" in summary


def test_brats_as_exclusive_labels_converts_and_trains(tmp_path):
    work = workdir(tmp_path, EXCLUSIVE, "exclusive")
    codes = np.stack([cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
                      for p in sorted((work / "data/slices/masks").glob("*.png"))])
    assert set(np.unique(codes).tolist()) == {0, 1, 2, 3}
    train(work, "unet", epochs=1)
    assert (work / "data/models/unet/best.pt").exists()
