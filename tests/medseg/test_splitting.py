import pandas as pd
import pytest

from medseg.errors import MedsegError
from medseg.splitting import NO_FOLD, assign_folds, check_group_integrity, merged_groups, split_groups

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def manifest(groups: int, positive: set[int], per_group: int = 5) -> pd.DataFrame:
    rows = [{"slice_id": f"g{g}_{i}", "group": f"g{g}", "fg_pixels": 3 if g in positive and i == 2 else 0}
            for g in range(groups) for i in range(per_group)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", range(5))
def test_whole_groups_and_every_split_has_a_positive_group(seed):
    m = manifest(20, positive={0, 3, 5, 8, 11, 12, 17})
    split = split_groups(m, FRACTIONS, seed)
    assert (split.groupby("group")["split"].nunique() == 1).all()
    counts = split.drop_duplicates("group")["split"].value_counts()
    assert counts.to_dict() == {"train": 12, "val": 4, "test": 4}
    merged = split.merge(m, on=["slice_id", "group"])
    pos_groups = merged[merged.fg_pixels > 0].drop_duplicates("group")["split"].value_counts()
    assert set(pos_groups.index) == {"train", "val", "test"}


def test_deterministic_by_seed():
    m = manifest(15, positive={1, 2, 3, 4})
    assert split_groups(m, FRACTIONS, 1).equals(split_groups(m, FRACTIONS, 1))
    assert not split_groups(m, FRACTIONS, 1).equals(split_groups(m, FRACTIONS, 2))


def test_too_few_positive_groups_fails_loudly():
    with pytest.raises(MedsegError, match=r"no group with foreground lands in .*change split\.fractions"):
        split_groups(manifest(10, positive={4}), FRACTIONS, 0)


def test_no_foreground_anywhere_names_dataset_labels():
    """Empty masks everywhere point at the labels that made them, not at the split."""
    with pytest.raises(MedsegError, match=r"no volume has any foreground: .*dataset\.labels"):
        split_groups(manifest(10, positive=set()), FRACTIONS, 0)


def test_integrity_check_catches_a_leak():
    leaked = pd.DataFrame({"slice_id": ["a", "b"], "group": ["p1", "p1"], "split": ["train", "test"]})
    with pytest.raises(MedsegError, match="'p1' appears in more than one split"):
        check_group_integrity(leaked)


def test_groups_sharing_an_identical_image_stay_together():
    m = manifest(20, positive={0, 3, 5, 8, 11, 12, 17})
    m["pixel_hash"] = ""
    m.loc[m.slice_id == "g1_0", "pixel_hash"] = "abc"  # the same image stored for g1, g2 and g9
    m.loc[m.slice_id == "g2_4", "pixel_hash"] = "abc"
    m.loc[m.slice_id == "g9_3", "pixel_hash"] = "abc"
    for seed in range(10):
        split = split_groups(m, FRACTIONS, seed).drop_duplicates("group").set_index("group")["split"]
        assert split["g1"] == split["g2"] == split["g9"]
        assert split.index.nunique() == 20


def test_identical_images_merge_groups_through_chains():
    """g1 shares an image with g2 and g2 another with g3: all three are one unit, named after g1;
    g4 stays alone, and a slice without a hash links nothing."""
    m = pd.DataFrame({"slice_id": list("abcdefg"), "group": ["g1", "g2", "g2", "g3", "g4", "g4", "g5"],
                      "pixel_hash": ["h1", "h1", "h2", "h2", "", "", ""]})
    assert merged_groups(m).tolist() == ["g1", "g1", "g1", "g1", "g4", "g4", "g5"]
    assert merged_groups(m.drop(columns="pixel_hash")).equals(m["group"])


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_folds_keep_groups_whole_stratified_and_the_test_split_unchanged(folds):
    m = manifest(30, positive=set(range(0, 30, 2)))
    plain = split_groups(m, FRACTIONS, 0)
    split = assign_folds(m, plain, folds, 0)
    assert split["slice_id"].equals(plain["slice_id"])
    assert (split["split"] == "test").equals(plain["split"] == "test")  # the same held-out cases
    assert (split.loc[split.split == "test", "fold"] == NO_FOLD).all()
    assert set(split.loc[split.split != "test", "split"]) == {"train"}
    assert (split.groupby("group")["fold"].nunique() == 1).all()
    groups = split[split.fold >= 0].drop_duplicates("group").set_index("group")["fold"]
    positive = m.groupby("group")["fg_pixels"].sum().gt(0)
    pos_per_fold = groups[positive[groups.index].to_numpy()].value_counts().reindex(range(folds), fill_value=0)
    neg_per_fold = groups[~positive[groups.index].to_numpy()].value_counts().reindex(range(folds), fill_value=0)
    assert pos_per_fold.min() >= 1 and pos_per_fold.max() - pos_per_fold.min() <= 1, pos_per_fold
    assert neg_per_fold.max() - neg_per_fold.min() <= 1, neg_per_fold
    assert sorted(groups.unique()) == list(range(folds)) and len(groups) == 24


def test_folds_deterministic_by_seed():
    m = manifest(30, positive=set(range(0, 30, 3)))
    plain = split_groups(m, FRACTIONS, 0)
    assert assign_folds(m, plain, 3, 7).equals(assign_folds(m, plain, 3, 7))
    assert not assign_folds(m, plain, 3, 7)["fold"].equals(assign_folds(m, plain, 3, 8)["fold"])


def test_more_folds_than_positive_groups_fails_loudly():
    m = manifest(20, positive={0, 3, 5, 8})
    plain = split_groups(m, FRACTIONS, 0)
    with pytest.raises(MedsegError, match=r"cannot give each of split.folds=5 folds one"):
        assign_folds(m, plain, 5, 0)


def test_groups_sharing_an_image_share_a_fold_and_a_leak_is_caught():
    m = manifest(30, positive=set(range(0, 30, 2)))
    m["pixel_hash"] = ""
    m.loc[m.slice_id.isin(["g1_0", "g7_1", "g13_2"]), "pixel_hash"] = "same"
    split = assign_folds(m, split_groups(m, FRACTIONS, 0), 3, 0)
    assert split[split.group.isin(["g1", "g7", "g13"])]["fold"].nunique() == 1
    leaked = split.copy()
    leaked.loc[leaked.slice_id == "g1_0", "fold"] = (leaked.loc[leaked.slice_id == "g1_1", "fold"].iloc[0] + 1) % 3
    with pytest.raises(MedsegError, match="appears in more than one fold"):
        check_group_integrity(leaked)
