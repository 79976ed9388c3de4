"""medseg.folds: which checkpoints a model folder is, the ensemble mean, and tidying another
fold count's leftovers out of the persisted model and log folders."""
import re

import numpy as np
import pandas as pd
import pytest

from medseg import paths
from medseg.errors import MedsegError
from medseg.folds import checkpoint_paths, mean_probs, read_ensemble, tidy_layout, write_ensemble, write_fold_curves


def test_a_file_a_folder_and_a_k_fold_folder(tmp_path):
    single = tmp_path / "unet"
    single.mkdir()
    (single / "best.pt").write_bytes(b"x")
    assert checkpoint_paths(single / "best.pt") == [single / "best.pt"]
    assert checkpoint_paths(single) == [single / "best.pt"]
    folds = tmp_path / "deeplab"
    for k in range(3):
        (folds / f"fold_{k}").mkdir(parents=True)
        (folds / f"fold_{k}/best.pt").write_bytes(b"x")
    write_ensemble(folds, 3, 0.42, "out-of-fold")
    assert checkpoint_paths(folds) == [folds / f"fold_{k}/best.pt" for k in range(3)]
    assert read_ensemble(folds)["threshold"] == 0.42
    (folds / "fold_2/best.pt").unlink()
    with pytest.raises(MedsegError, match=r"fold_2/best.pt: missing from the k-fold model"):
        checkpoint_paths(folds)
    with pytest.raises(MedsegError, match="no such checkpoint or model folder"):
        checkpoint_paths(tmp_path / "nothing")


def test_a_broken_ensemble_json_is_one_line(tmp_path):
    (tmp_path / "ensemble.json").write_text('{"folds": "three"}')
    with pytest.raises(MedsegError, match="ensemble.json: not a medseg ensemble description"):
        read_ensemble(tmp_path)


@pytest.mark.parametrize(("text", "needle"), [
    ('{"folds": 3, "threshold": NaN}', "threshold=nan is not a number in [0, 1]"),
    ('{"folds": 3, "threshold": -0.1}', "threshold=-0.1 is not a number in [0, 1]"),
    ('{"folds": 3, "threshold": 1.5}', "threshold=1.5 is not a number in [0, 1]"),
    ('{"folds": 1, "threshold": 0.5}', "folds=1 is not a fold count"),
    ('{"folds": "3", "threshold": 0.5}', "folds='3' is not a fold count"),
])
def test_an_edited_ensemble_json_is_one_line_naming_the_value(tmp_path, text, needle):
    (tmp_path / "ensemble.json").write_text(text)
    with pytest.raises(MedsegError, match=re.escape(f"ensemble.json: {needle}")):
        read_ensemble(tmp_path)


def test_fold_folders_that_disagree_with_ensemble_json(tmp_path):
    """More fold models than ensemble.json names, or fold models without ensemble.json (issue 27, family 1)."""
    for k in range(3):
        (tmp_path / f"fold_{k}").mkdir()
        (tmp_path / f"fold_{k}/best.pt").write_bytes(b"x")
    with pytest.raises(MedsegError, match=r"holds fold_0..fold_2 but no ensemble.json \(its k-fold training did not "):
        checkpoint_paths(tmp_path)
    write_ensemble(tmp_path, 2, 0.5, "test")
    with pytest.raises(MedsegError, match=r"ensemble.json: names 2 folds but the folder holds fold_0, fold_1, fold_2"):
        checkpoint_paths(tmp_path)
    (tmp_path / "fold_2/best.pt").unlink()  # a fold folder without a model (e.g. the user's notes left there) is not one
    assert len(checkpoint_paths(tmp_path)) == 2


def test_mean_probs_is_the_member_mean():
    a, b = np.full((2, 4, 4), 0.2, np.float32), np.full((2, 4, 4), 0.6, np.float32)
    assert np.allclose(mean_probs([a, b]), 0.4) and mean_probs([a]) is a


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
