"""The plan: what `auto` resolves to for every dataset kind and profile, from the converted data's
fingerprint; explicit params win; each later stage takes only its own section's `auto`s."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medseg.datasets.registry import DATASET_PLANS, DATASETS, convert_choices, dataset_plan, planned_size
from medseg.errors import MedsegError
from medseg.params import BalanceParams, ConvertParams, SplitParams, TrainParams
from medseg.reporting import plan_markdown
from medseg.plans import (PLANNED, REAL_FRACTIONS, apply, build_plan, fingerprint, plan_size,
                          read_plan, resolve_profile, write_plan)
from tests.conftest import shipped

PHANTOMS = [n for n in DATASETS if n.startswith("phantom")]
REAL = [n for n in DATASETS if not n.startswith("phantom")]


def manifest(cases: int, slices_per_case: int, positive_every: int, size: int = 256) -> pd.DataFrame:
    """A manifest of `cases` groups; every `positive_every`-th slice holds 50 foreground pixels."""
    n = cases * slices_per_case
    return pd.DataFrame({"slice_id": [f"s{i}" for i in range(n)],
                         "group": [f"case{i // slices_per_case}" for i in range(n)],
                         "fg_pixels": [50 if i % positive_every == 0 else 0 for i in range(n)],
                         "height": size, "width": size})


# one fingerprint per dataset kind, shaped like the real set (LGG: 110 volumes of ~36 slices, a third
# with tumour; ISIC: one image per case, all positive; SIIM: single images, 22 % positive; MSD: long volumes)
KINDS = {"lgg": manifest(110, 36, 3), "isic": manifest(2594, 1, 1, 1024), "siim": manifest(12047, 1, 5, 1024),
         "lung": manifest(63, 250, 12, 512), "msd": manifest(40, 150, 4, 240), "phantom": manifest(72, 24, 5, 96),
         "folder": manifest(300, 1, 2, 512)}  # a user's own 2D set: one image per group, half with foreground


def plan_for(name: str, profile: str) -> dict:
    kind = next((k for k in KINDS if name.endswith(k)), "phantom")
    chosen = convert_choices(name, shipped(ConvertParams, size="auto", normalize="auto"), profile)
    size = chosen["convert.size"]["value"]
    return build_plan(dataset_plan(name), name, profile, "test", chosen, fingerprint(KINDS[kind], 3, size))


def test_every_dataset_has_a_plan_for_every_profile():
    assert set(DATASET_PLANS) == set(DATASETS)
    for name in DATASETS:
        for profile in ("cpu", "gpu"):
            plan = plan_for(name, profile)
            # convert.normalize is planned only for readers of 2D slice stacks (lgg, its phantom, folder)
            has_choice = DATASETS[name].normalizes
            expected = set(PLANNED) if has_choice else set(PLANNED) - {"convert.normalize"}
            assert set(plan["values"]) == expected, name
            assert all(entry["why"] for entry in plan["values"].values())
            fractions = plan["values"]["split.fractions"]["value"]
            assert sum(fractions.values()) == pytest.approx(1.0)


def test_phantoms_keep_the_recipe_they_always_had():
    for name in PHANTOMS:
        values = {k: v["value"] for k, v in plan_for(name, "cpu")["values"].items()}
        assert values.pop("convert.normalize", "none") == "none"  # the files' own scale, as always
        assert values == {"convert.size": 96, "split.fractions": {"train": 0.22, "val": 0.18, "test": 0.6},
                          "balance.neg_keep": 0.3, "balance.pos_repeat": 1.5, "train.epochs": 12,
                          "train.patience": 5, "train.batch_size": 16, "train.select": "best"}


def test_real_data_trains_on_most_patients_and_the_gpu_profile_goes_to_paper_scale():
    for name in REAL:
        cpu, gpu = plan_for(name, "cpu")["values"], plan_for(name, "gpu")["values"]
        assert cpu["split.fractions"]["value"] == REAL_FRACTIONS and REAL_FRACTIONS["train"] >= 0.6
        assert gpu["convert.size"]["value"] >= 2 * cpu["convert.size"]["value"]
        assert gpu["train.epochs"]["value"] > cpu["train.epochs"]["value"]
        assert gpu["train.patience"]["value"] >= cpu["train.patience"]["value"]
    lgg = plan_for("lgg", "gpu")["values"]
    assert lgg["convert.size"]["value"] == 256  # Buda et al. 2019 trained at the native 256 px


def test_fingerprint_counts_what_the_plan_and_summary_report():
    prints = fingerprint(KINDS["lgg"], 3, 96)
    assert prints["cases"] == 110 and prints["slices"] == 3960 and prints["positive_slices"] == 1320
    assert prints["positive_cases"] == 110 and prints["slices_per_case_median"] == 36
    assert prints["foreground_share"] == pytest.approx(1320 * 50 / (3960 * 96 * 96))
    assert prints["original_size_median"] == [256, 256] and prints["channels"] == 3


def test_explicit_size_wins_and_the_profile_follows_the_machine(monkeypatch):
    import torch

    assert plan_size(dataset_plan("lgg"), "lgg", 160, "cpu") == (160, "params.yaml convert.size")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_profile("auto") == ("cpu", "auto: no CUDA device")
    assert planned_size("lgg", shipped(ConvertParams, size="auto", profile="auto")) == 96
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H200")
    assert resolve_profile("auto")[0] == "gpu" and "H200" in resolve_profile("auto")[1]
    assert planned_size("lgg", shipped(ConvertParams, size="auto", profile="auto")) == 256
    assert resolve_profile("cpu") == ("cpu", "params.yaml convert.profile")


def test_lgg_is_rescaled_per_patient_unless_told_and_other_readers_refuse_volume():
    chosen = convert_choices("lgg", shipped(ConvertParams, size="auto", normalize="auto"), "cpu")
    assert chosen["convert.normalize"]["value"] == "volume" and "scanner" in chosen["convert.normalize"]["why"]
    explicit = convert_choices("lgg", shipped(ConvertParams, size=128, normalize="none"), "gpu")
    assert explicit == {"convert.size": {"value": 128, "why": "params.yaml convert.size"},
                        "convert.normalize": {"value": "none", "why": "params.yaml convert.normalize"}}
    assert "convert.normalize" not in convert_choices("msd", shipped(ConvertParams, size="auto", normalize="auto"), "cpu")
    for name in ("msd", "isic", "siim", "phantom"):
        with pytest.raises(MedsegError, match=rf"convert\.normalize=volume applies to .*lgg.*; {name} is read"):
            convert_choices(name, shipped(ConvertParams, size="auto", normalize="volume"), "cpu")


def test_apply_replaces_only_auto_values_of_its_section(tmp_path, caplog):
    write_plan(tmp_path, plan_for("lgg", "cpu"))
    train = shipped(TrainParams, epochs="auto", patience=3)
    with caplog.at_level("INFO"):
        out = apply(train, tmp_path)
    assert out == train.with_values(epochs=32, batch_size=8, select="final") and train.epochs == "auto"
    assert "train.epochs: auto -> 32" in caplog.text and "train.batch_size: auto -> 8" in caplog.text
    split = apply(shipped(SplitParams, fractions="auto", seed=0, folds=5), tmp_path)
    assert split.fractions == REAL_FRACTIONS and split.folds == 5
    explicit = shipped(BalanceParams, neg_keep=0.5, pos_repeat=2.0, seed=0)
    assert apply(explicit, tmp_path / "nowhere") == explicit  # nothing auto: the plan is not read


def test_a_missing_or_foreign_plan_is_one_line_naming_the_file(tmp_path):
    with pytest.raises(MedsegError, match=r"plans\.json: missing; run the convert stage first"):
        apply(shipped(TrainParams, epochs="auto"), tmp_path)
    (tmp_path / "plans.json").write_text('{"something": 1}')
    with pytest.raises(MedsegError, match=r"plans\.json: not a medseg plan"):
        read_plan(tmp_path)


def test_plan_markdown_lists_every_value_with_its_reason():
    text = plan_markdown(plan_for("lgg", "cpu"))
    assert "profile `cpu`" in text and "cases 110" in text
    for key in PLANNED:
        assert f"`{key}`" in text
    assert np.sum([line.startswith("| `") for line in text.splitlines()]) == len(PLANNED)
