"""Patient/volume-level train/val/test split, stratified by whether a group has any foreground (with
several classes: by the rarest class it holds, so that no class vanishes from a split), and, with
`split.folds` K >= 2, K patient-level cross-validation folds over the non-test groups.

The three-way split is hand-written: scikit-learn's StratifiedGroupKFold gives k equal folds, not
three arbitrary fractions, and does not guarantee every split a positive group. The folds are
scikit-learn's StratifiedKFold over whole groups.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedKFold

from medseg.errors import MedsegError

SPLITS = ("train", "val", "test")
NO_FOLD = -1  # the `fold` of a test slice


def _allocate(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Split n items by fractions (largest remainder), giving val/test one each when n allows."""
    raw = {k: n * fractions[k] for k in SPLITS}
    counts = {k: int(np.floor(v)) for k, v in raw.items()}
    for k in sorted(SPLITS, key=lambda k: raw[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[k] += 1
    for k in ("test", "val"):
        if counts[k] == 0 and fractions[k] > 0 and counts["train"] > 1:
            counts[k], counts["train"] = 1, counts["train"] - 1
    return counts


def merged_groups(manifest: pd.DataFrame) -> pd.Series:
    """Per slice, its group merged with every group that holds an identical slice (scipy's connected
    components over groups linked by a shared `pixel_hash`), so the same image stored under two ids
    never lands in two splits. A merged group is named after its first group in manifest order."""
    if "pixel_hash" not in manifest:
        return manifest["group"]
    groups = pd.Index(manifest["group"].unique())
    code = pd.Series(np.arange(len(groups)), index=groups)
    hashed = manifest[manifest["pixel_hash"].astype(str) != ""]
    first = hashed.groupby("pixel_hash")["group"].transform("first")
    links = coo_matrix((np.ones(len(hashed)), (code[first].to_numpy(), code[hashed["group"]].to_numpy())),
                       shape=(len(groups), len(groups)))
    _, component = connected_components(links, directed=False)
    name = pd.Series(groups, index=groups).groupby(component).transform("first")
    return manifest["group"].map(name)


CLASS_PREFIX = "class_"  # manifest columns of per-class foreground pixels (multi-class stores)
EMPTY = -1  # the stratum of a group without foreground


def group_strata(manifest: pd.DataFrame) -> pd.Series:
    """Per group, the stratum it is split in: 0 with foreground, EMPTY without; with per-class
    columns (class_<name>), the index of the rarest class (fewest groups) the group holds."""
    columns = [c for c in manifest.columns if c.startswith(CLASS_PREFIX)]
    per_group = manifest.groupby("group")[["fg_pixels", *columns]].sum() > 0
    strata = pd.Series(np.where(per_group["fg_pixels"], 0, EMPTY), index=per_group.index)
    if columns:
        rarest_first = sorted(range(len(columns)), key=lambda k: (per_group[columns[k]].sum(), k))
        for rank, k in reversed(list(enumerate(rarest_first))):  # the rarest class held wins
            strata[per_group[columns[k]]] = rank
    return strata


def split_groups(manifest: pd.DataFrame, fractions: dict[str, float], seed: int) -> pd.DataFrame:
    """Return slice_id -> split, assigning whole groups; each stratum (group_strata: the groups with
    foreground, or with each rarest class, then the empty ones) split separately."""
    original = manifest
    manifest = manifest.assign(group=merged_groups(manifest))
    strata = group_strata(manifest)
    positive = strata != EMPTY
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    total = _allocate(len(positive), fractions)
    plan = [(s, _allocate(int((strata == s).sum()), fractions)) for s in sorted(set(strata[positive]))]
    neg_counts = {k: total[k] - sum(counts[k] for _, counts in plan) for k in SPLITS}
    while min(neg_counts.values()) < 0:  # a split got more positive groups than its total share
        short = min(neg_counts, key=neg_counts.get)
        neg_counts[short] += 1
        neg_counts[max(neg_counts, key=neg_counts.get)] -= 1
    for stratum, counts in [*plan, (EMPTY, neg_counts)]:
        groups = np.array(sorted(strata.index[strata == stratum]))
        rng.shuffle(groups)
        start = 0
        for name in SPLITS:
            for g in groups[start: start + counts[name]]:
                assignment[str(g)] = name
            start += counts[name]
    for name in SPLITS:
        if fractions[name] > 0 and not any(
            split == name and positive[g] for g, split in assignment.items()
        ):
            raise MedsegError(
                f"split: no group with foreground lands in '{name}' "
                f"({int(positive.sum())} positive groups of {len(positive)}); "
                f"{_too_few_positive_hint(positive, 'add cases or change split.fractions')}"
            )
    out = pd.DataFrame({"slice_id": original["slice_id"], "group": original["group"]})
    out["split"] = manifest["group"].map(assignment)
    check_group_integrity(out)
    check_classes_trained(manifest, out["split"] == "train", "the train split")
    return out[["slice_id", "split", "group"]]


def check_classes_trained(manifest: pd.DataFrame, trains: pd.Series, where: str) -> None:
    """Every class of a multi-class store (class_<name> columns) must occur in the slices `trains` marks."""
    for column in (c for c in manifest.columns if c.startswith(CLASS_PREFIX)):
        if manifest.loc[trains.to_numpy(), column].sum() == 0:
            held = int((manifest.groupby("group")[column].sum() > 0).sum())
            raise MedsegError(f"split: class {column[len(CLASS_PREFIX):]!r} ({held} group(s) hold it) does not occur "
                              f"in {where}; add cases or change split.fractions or split.seed")


def _too_few_positive_hint(positive: pd.Series, otherwise: str) -> str:
    """What to change: with no foreground anywhere the labels are the likely cause, not the split;
    else `otherwise`."""
    if not positive.any():
        return ("no volume has any foreground: for label volumes, dataset.labels picks the foreground values "
                "(check them against the data)")
    return otherwise


def check_group_integrity(split: pd.DataFrame) -> None:
    """Fail loudly if any group appears in more than one split (or, with folds, in two folds)."""
    for column, what in (("split", "split"), ("fold", "fold")):
        if column not in split:
            continue
        per_group = split.groupby("group")[column].nunique()
        leaked = per_group[per_group > 1]
        if len(leaked):
            raise MedsegError(f"split: group {leaked.index[0]!r} appears in more than one {what}")


def assign_folds(manifest: pd.DataFrame, split: pd.DataFrame, folds: int, seed: int) -> pd.DataFrame:
    """`split` with train and val pooled into `folds` patient-level folds (the `fold` column,
    NO_FOLD for test), stratified by whether a group has foreground; the test split is unchanged.

    Groups are merged as in split_groups, so the same image under two ids stays in one fold."""
    unit_of = dict(zip(manifest["slice_id"], merged_groups(manifest)))
    fg_of = dict(zip(manifest["slice_id"], manifest["fg_pixels"]))
    pool = split[split["split"] != "test"]
    units = pool["slice_id"].map(unit_of)
    positive = pool["slice_id"].map(fg_of).gt(0).groupby(units).any().sort_index()
    pooled = manifest[manifest["slice_id"].isin(pool["slice_id"])].assign(group=lambda m: m["slice_id"].map(unit_of))
    strata = group_strata(pooled).reindex(positive.index)
    labels = positive if (strata[positive] == 0).all() else strata  # binary: by foreground, as always
    if positive.sum() < folds:
        raise MedsegError(f"split: {int(positive.sum())} non-test groups with foreground cannot give each of "
                          f"split.folds={folds} folds one; "
                          f"{_too_few_positive_hint(positive, 'lower split.folds or add cases')}")
    with warnings.catch_warnings():  # fewer lesion-free groups than folds: some folds get none, as intended
        warnings.simplefilter("ignore", UserWarning)
        held_out = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(positive, labels)
        fold_of = {unit: k for k, (_, held) in enumerate(held_out) for unit in positive.index[held]}
    out = split.assign(split=np.where(split["split"] == "test", "test", "train"))
    out["fold"] = out["slice_id"].map(unit_of).map(fold_of).where(out["split"] != "test", NO_FOLD).astype(int)
    for k in range(folds):
        if not out.loc[out["fold"] == k, "slice_id"].map(fg_of).gt(0).any():
            raise MedsegError(f"split: fold {k} holds no group with foreground; lower split.folds or add cases")
        check_classes_trained(manifest.set_index("slice_id").loc[out["slice_id"]].reset_index(),
                              (out["fold"] != k) & (out["split"] != "test"), f"the training folds of fold {k}")
    check_group_integrity(out)
    return out
