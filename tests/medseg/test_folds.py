"""medseg.folds: the ensemble mean, tidying another fold count's leftovers out of the persisted model
and log folders, and every fold's curves in one table."""

import numpy as np
import pandas as pd
import pytest

from medseg import paths
from medseg.folds import mean_probs, tidy_layout, write_fold_curves


def test_mean_probs_is_the_member_mean():
    a, b = np.full((2, 4, 4), 0.2, np.float32), np.full((2, 4, 4), 0.6, np.float32)
    assert np.allclose(mean_probs([a, b]), 0.4) and mean_probs([a]) is a
    assert np.array_equal(a, np.full((2, 4, 4), 0.2, np.float32))  # the members are left as they were


@pytest.mark.parametrize("folds", [2, 3, 5, 7])
def test_mean_probs_streams_the_members_to_the_same_bytes_as_the_stacked_mean(folds):
    """A K-fold ensemble is summed as each fold's probabilities arrive: at most two arrays alive, and
    the bytes evaluate scored before (np.mean over the stack), so no committed number moves."""
    rng = np.random.default_rng(folds)
    members = [rng.random((5, 3, 17, 19), dtype=np.float32) for _ in range(folds)]
    alive, most = [0], [0]

    class Tracked(np.ndarray):  # counts the member arrays not yet garbage-collected
        def __del__(self):
            alive[0] -= 1

    def arrive():
        for m in members:
            alive[0] += 1
            most[0] = max(most[0], alive[0])
            yield m.copy().view(Tracked)

    streamed = mean_probs(arrive())
    assert streamed.dtype == np.float32
    assert streamed.tobytes() == np.mean(np.stack(members), axis=0, dtype=np.float32).tobytes()
    assert most[0] <= 2, most[0]


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")


def test_tidy_layout_removes_the_other_fold_count_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    models, logs = paths.model_dir("unet"), paths.train_log_dir("unet")
    for rel in ("best.pt", "last.pt", "fold_0/best.pt", "fold_1/best.pt", "fold_4/best.pt", "ensemble.json"):
        _touch(models / rel)
    for rel in ("metrics.json", "plots/metrics/val_dice.tsv", "fold_0/metrics.json", "fold_4/metrics.json", "folds.tsv"):
        _touch(logs / rel)
    tidy_layout("unet", 2)
    assert sorted(p.name for p in models.iterdir()) == ["ensemble.json", "fold_0", "fold_1"]
    assert sorted(p.name for p in logs.iterdir()) == ["fold_0", "folds.tsv"]
    for rel in ("best.pt", "last.pt"):
        _touch(models / rel)
    _touch(logs / "metrics.json")
    tidy_layout("unet", 1)
    assert sorted(p.name for p in models.iterdir()) == ["best.pt", "last.pt"]
    assert sorted(p.name for p in logs.iterdir()) == ["folds.tsv", "metrics.json"]


def test_tidy_layout_leaves_what_medseg_did_not_write(tmp_path, monkeypatch, caplog):
    """An export or notes kept in a model folder survive a change of split.folds, and are named (issue 27, 7)."""
    monkeypatch.chdir(tmp_path)
    models = paths.model_dir("unet")
    for rel in ("fold_0/best.pt", "fold_0/last.pt", "fold_3/best.pt", "fold_3/mine.txt", "ensemble.json",
                "export/model.onnx", "notes.txt", "best.pt", "last.pt"):
        _touch(models / rel)
    with caplog.at_level("WARNING"):
        tidy_layout("unet", 1)
    left = sorted(p.relative_to(models).as_posix() for p in models.rglob("*") if p.is_file())
    assert left == ["best.pt", "export/model.onnx", "fold_3/mine.txt", "last.pt", "notes.txt"]
    assert all(name in caplog.text for name in ("unet/export", "unet/notes.txt", "fold_3/mine.txt", "not written by medseg"))


def test_fold_curves_gather_every_fold(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for fold in range(2):
        folder = paths.train_log_dir("unet", fold) / "plots" / "metrics"
        folder.mkdir(parents=True)
        for metric in ("train_loss", "val_loss", "val_dice"):
            pd.DataFrame({"timestamp": [0, 0, 0], "step": [0, 1, 2],
                          metric: [fold + 0.1 * s for s in range(3)]}).to_csv(folder / f"{metric}.tsv", sep="\t",
                                                                             index=False)
    table = write_fold_curves("unet", 2)
    assert list(table.columns) == ["fold", "step", "train_loss", "val_loss", "val_dice"]
    assert table["fold"].tolist() == [0, 0, 0, 1, 1, 1]
    assert table.loc[table.fold == 1, "val_dice"].tolist() == pytest.approx([1.0, 1.1, 1.2])
    assert pd.read_csv(paths.fold_curves("unet"), sep="\t").equals(table)
