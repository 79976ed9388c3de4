"""bench.recipe_cv end to end on a tiny LGG-layout phantom: prepare, two K-fold runs, the ablation and
models tables. Every patient is scored exactly once, by the fold model that did not train on it."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bench import recipe_cv

TINY = ["train.epochs=1", "train.batch_size=4", "train.patience=0", "models.width=4", "balance.neg_keep=0.5"]


@pytest.fixture(scope="module")
def store(make_phantom, tmp_path_factory):
    raw = make_phantom("lgg", cases=6, depth=6, size=32, seed=3)
    out = tmp_path_factory.mktemp("cv") / "slices"
    recipe_cv.prepare("phantom_lgg", raw, 32, "volume", out)
    return out


def test_prepare_keeps_the_source_masks_for_scoring_on_their_own_grid(store):
    native = np.load(store / "native.npz")
    manifest = pd.read_csv(store / "manifest.csv", dtype={"slice_id": str})
    assert sorted(native["slice_id"].astype(str)) == sorted(manifest["slice_id"])
    assert native["masks"].shape == (len(manifest), 32, 32) and native["masks"].dtype == bool
    positive = dict(zip(native["slice_id"].astype(str), native["masks"].sum(axis=(1, 2))))
    assert all(positive[s] == n for s, n in zip(manifest["slice_id"], manifest["fg_pixels"]))  # same size: same masks


def test_a_run_scores_every_patient_out_of_fold_and_the_tables_pair_its_variants(store, tmp_path):
    runs = tmp_path / "runs"
    recipe_cv.run(store, "unet", "ctx", runs, TINY, folds=2, seed=0, context=1, size=None)
    meta = json.loads((runs / "ctx" / "run.json").read_text())
    assert meta["channels"] == 9 and meta["folds"] == 2 and len(meta["per_fold"]) == 2  # 2.5D: 3 slices x 3
    assert meta["recipe"]["train"]["epochs"] == 1 and meta["recipe"]["balance"]["pos_repeat"] == 1.5  # plan: phantom
    assert meta["normalize"] == json.loads((store / "info.json").read_text())["normalize"] == "volume"
    # 3 training patients per fold: one of them (at least one) chooses the checkpoint, not the scored fold
    assert [f["val_patients"] for f in meta["per_fold"]] == [1, 1] and "training patients" in meta["checkpoint_chosen_on"]
    manifest = pd.read_csv(store / "manifest.csv")
    for variant in recipe_cv.POSTPROCESS:
        cases = pd.read_csv(runs / "ctx" / f"per_case_{variant}.csv", dtype={"group": str})
        assert sorted(cases["group"]) == sorted(manifest["group"].unique())  # each patient once
        assert cases["dice"].between(0, 1).all() and cases["fold"].between(0, 1).all()
        assert set(cases.groupby("group")["fold"].nunique()) == {1}
    oof = np.load(runs / "ctx" / "oof.npz")
    assert oof["probs"].shape == (len(manifest), 32, 32) and oof["probs_tta"].dtype == np.uint8
    assert not (runs / "ctx" / "models").exists()  # checkpoints removed once scored
    out = tmp_path / "tables"
    recipe_cv.table(runs, "ctx", out, (3929, 1373, 0.7))
    ablation = json.loads((out / "ablation.json").read_text())
    assert ablation["baseline"] == "ctx/min_area_2d"
    rows = {(r["run"], r["variant"]): r for r in ablation["rows"]}
    # each variant with and without TTA, on the store's grid and on the source's masks (native.npz)
    assert len(rows) == 2 * (len(recipe_cv.POSTPROCESS) + len(recipe_cv.NATIVE_POSTPROCESS))
    for variant in ("none", "none+tta", "largest_3d"):  # the source is 32 px like the store: the same masks, the same scores
        assert rows[("ctx", variant + "@native")]["dice"] == pytest.approx(rows[("ctx", variant)]["dice"], abs=1e-6)
    assert rows[("ctx", "min_area_2d")]["diff_to_baseline"] is None
    assert rows[("ctx", "none")]["diff_to_baseline"] is not None
    assert rows[("ctx", "auto")]["full_set_minutes"] > 0 and "2.5D ±1" in rows[("ctx", "auto")]["lever"]
    assert "convert.normalize=volume" in rows[("ctx", "auto")]["lever"]
    assert "held-out fold" not in rows[("ctx", "auto")]["lever"]
    recipe_cv.table(runs, "ctx", out, (3929, 1373, 0.7), "auto", ["auto", "auto+tta"])  # against another variant
    only = {r["variant"]: r for r in json.loads((out / "ablation.json").read_text())["rows"]}
    assert set(only) == {"auto", "auto+tta"} and only["auto"]["diff_to_baseline"] is None
    recipe_cv.models_table(runs, ["ctx"], "auto", out, (3929, 1373, 0.7))
    models = json.loads((out / "models.json").read_text())
    assert models["models"]["unet"]["dice"] == rows[("ctx", "auto")]["dice"] and models["pairs"] == []


def test_inner_validation_takes_whole_patients_of_the_training_pool_by_seed():
    groups = pd.Series(np.repeat([f"p{i:02d}" for i in range(32)], 3))
    picked = recipe_cv.inner_val(groups, 0.125, seed=4)
    chosen = set(groups[picked])
    assert len(chosen) == 4 and all(picked[groups == g].all() for g in chosen)  # 1/8 of 32 patients, every slice of each
    assert (recipe_cv.inner_val(groups, 0.125, seed=4) == picked).all()
    assert set(groups[recipe_cv.inner_val(groups, 0.125, seed=5)]) != chosen
    assert recipe_cv.inner_val(groups[:6], 0.125, seed=0).sum() == 3  # 2 patients: still one validates
    assert not recipe_cv.inner_val(groups, 0, seed=0).any()  # 0: none (the held-out fold chooses)


def test_context_stacks_neighbours_within_each_volume_only():
    rows = pd.DataFrame({"group": ["a", "a", "a", "b"], "index": [2, 0, 1, 0]})
    images = np.arange(4, dtype=np.uint8).reshape(4, 1, 1, 1)  # row value = row number
    stacked = recipe_cv.with_context(images, rows, 1)[:, 0, 0, :]
    # row 1 is a's first slice (index 0): previous = itself, next = row 2 (index 1)
    assert stacked[1].tolist() == [1, 1, 2] and stacked[0].tolist() == [0, 2, 0] and stacked[3].tolist() == [3, 3, 3]


def test_unknown_override_is_named():
    from medseg.errors import MedsegError

    with pytest.raises(MedsegError, match="unknown key train.nonsense"):
        recipe_cv.recipe("unet", ["train.nonsense=1"], {"values": {}})
