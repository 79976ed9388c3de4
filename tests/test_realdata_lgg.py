"""Real LGG data through the pipeline (issue 23), skipped cleanly where ../shared is absent:
the 40 development patients through download (the local Kaggle zip) + convert + split with 5 folds,
and `dvc repro` end to end on four of them with the one switch (dataset.name + dataset.source; the
rest shrunk only in size and schedule so the run fits CI)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from medseg.plans import REAL_FRACTIONS
from tests.conftest import REPO, make_workdir, stage
from tests.test_pipeline_e2e import MODELS, copy_repo, run

SHARED = REPO.parent / "shared" / "realdata"
LGG_ZIP = SHARED / "lgg_dev" / "lgg-mri-segmentation.zip"
LGG_FOUR = SHARED / "lgg"  # four of the 40 patients, unzipped (kaggle_3m/)


@pytest.mark.skipif(not LGG_ZIP.is_file(), reason="../shared/realdata/lgg_dev is absent")
def test_forty_patients_download_convert_and_split_into_patient_folds(tmp_path):
    # convert.size auto: the plan's side (96 on a CPU); at 32 px nearest-neighbour resizing erases the
    # smallest tumour of the 451 (450 positive slices are left)
    work = make_workdir(tmp_path, {"dataset.name": "lgg", "dataset.source": str(LGG_ZIP), "convert.size": "auto",
                                   "convert.workers": 2, "split.fractions": "auto", "split.folds": 5})
    for module in ("stages.download", "stages.convert", "stages.split"):
        done = stage(work, module)
        assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((work / "results/convert/metrics.json").read_text())
    assert (metrics["cases"], metrics["slices"], metrics["positive_slices"]) == (40, 1282, 451)
    manifest = pd.read_csv(work / "data/slices/manifest.csv")
    assert manifest.groupby("group")["fg_pixels"].sum().gt(0).all()  # every LGG patient has tumour
    split = pd.read_csv(work / "data/split.csv")
    assert len(split) == 1282 and split["slice_id"].is_unique
    assert (split.groupby("group")["split"].nunique() == 1).all()  # no patient in two splits
    assert (split.groupby("group")["fold"].nunique() == 1).all()  # ... nor in two folds
    groups = split.groupby("group")["fold"].first()
    assert (groups == -1).sum() == 8  # the plan's 20 % test patients, held out of the folds
    assert sorted(groups[groups >= 0].value_counts().tolist()) == [6, 6, 6, 7, 7]  # 32 patients in 5 folds
    plan = json.loads((work / "data/slices/plans.json").read_text())
    assert plan["fingerprint"]["cases"] == 40 and plan["fingerprint"]["positive_slices"] == 451
    assert plan["values"]["split.fractions"]["value"] == REAL_FRACTIONS
    assert plan["values"]["convert.normalize"]["value"] == "volume"  # each patient to its own MR range
    assert json.loads((work / "data/slices/info.json").read_text())["normalize"] == "volume"
    assert not any((work / "data/raw/lgg").glob("**/*.tmp"))
    assert LGG_ZIP.is_file()  # the user's archive is linked or copied, never moved


@pytest.mark.e2e
@pytest.mark.skipif(not (LGG_FOUR / "kaggle_3m").is_dir(), reason="../shared/realdata/lgg is absent")
def test_dvc_repro_on_four_real_patients_from_one_switch(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["dataset"].update(name="lgg", source=str(LGG_FOUR))  # the switch; what follows only shrinks for CI
    params["convert"].update(size=32, workers=1)
    params["train"].update(epochs=1, batch_size=8)
    for name in ("unet", "attn_unet"):
        params["models"][name]["width"] = 4
    for name in ("deeplab", "upernet"):
        params["models"][name]["decoder_channels"] = 16
    params["evaluate"].update(resamples=2_000, pr_max_pixels=10_000)
    dest, env = copy_repo(tmp_path / "repo", params)
    run(["dvc", "repro"], dest, env)
    plan = json.loads((dest / "data/slices/plans.json").read_text())
    assert plan["dataset"] == "lgg" and plan["fingerprint"]["cases"] == 4
    balance = json.loads((dest / "results/balance/metrics.json").read_text())
    lgg_cpu = plan["values"]
    split = pd.read_csv(dest / "data/split.csv")
    assert split.groupby("split")["group"].nunique().to_dict() == {"train": 2, "val": 1, "test": 1}
    assert balance["negative_after"] == round(lgg_cpu["balance.neg_keep"]["value"] * balance["negative_before"])
    summary = (dest / "results/evaluate/summary.md").read_text()
    assert "## Plan" in summary and "profile `cpu`" in summary or "profile `gpu`" in summary
    for name in MODELS:
        metrics = json.loads((dest / f"results/evaluate/{name}/metrics.json").read_text())
        assert metrics["cases"] == 1 and 0.0 <= metrics["dice"] <= 1.0
        assert isinstance(metrics["largest_volume"], bool) and metrics["min_volume"] >= 0
    status = run(["dvc", "status"], dest, env).stdout
    assert "changed" not in status
