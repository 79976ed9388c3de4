"""medseg.model_card: what train writes into best.pt, last.pt and ensemble.json reads back as the typed
card it was written from; the layouts a --model path may have; and a missing or edited field is one
line naming the file (issue 27, families 1 and 2)."""
from __future__ import annotations

import re

import pytest
import torch

from medseg.model_card import (Compute, Header, Threshold, checkpoint_paths, finalise_best, load_checkpoint,
                               read_card, read_ensemble, save_checkpoint, write_best, write_ensemble, write_last)
from medseg.errors import MedsegError
from tests.tiny_models import PRE, TINY, kfold_folder, save_tiny


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda c: c["preprocess"].pop("size"), "preprocess.size=None is not a positive integer"),
    (lambda c: c["preprocess"].update(channels="3"), "preprocess.channels='3' is not a positive integer"),
    (lambda c: c["preprocess"].update(window_level="abc"), "preprocess.window_level='abc' is not a finite number"),
    (lambda c: c.update(preprocess=[48, 1]), "preprocess=[48, 1] is not a mapping"),
    (lambda c: c.update(in_channels=0), "in_channels=0 is not a positive integer"),
    (lambda c: c.update(in_channels=True), "in_channels=True is not a positive integer"),
    (lambda c: c.update(threshold=float("nan")), "threshold=nan is not a number in [0, 1]"),
    (lambda c: c.update(threshold=1.5), "threshold=1.5 is not a number in [0, 1]"),
    (lambda c: c.update(model_params="width=4"), "model_params is not what medseg writes"),
], ids=["no_size", "channels_text", "window_text", "preprocess_list", "zero_channels", "bool_channels",
        "nan_threshold", "threshold_above_1", "params_text"])
def test_an_edited_header_field_names_the_checkpoint(tmp_path, edit, needle):
    path = save_tiny(tmp_path / "best.pt")
    ckpt = torch.load(path, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, path)
    with pytest.raises(MedsegError, match=re.escape(f"{path}: checkpoint ") + ".*" + re.escape(needle)):
        load_checkpoint(path)


def test_the_header_training_writes_loads(tmp_path):
    ckpt = load_checkpoint(save_tiny(tmp_path / "best.pt", threshold=0.0))  # 0 and 1 are thresholds too
    assert ckpt["preprocess"]["size"] == 48 and ckpt["threshold"] == 0.0


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
    write_ensemble(folds, 3, Threshold(0.42, "out-of-fold", True))
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
    write_ensemble(tmp_path, 2, Threshold(0.5, "test", True))
    with pytest.raises(MedsegError, match=r"ensemble.json: names 2 folds but the folder holds fold_0, fold_1, fold_2"):
        checkpoint_paths(tmp_path)
    (tmp_path / "fold_2/best.pt").unlink()  # a fold folder without a model (e.g. the user's notes left there) is not one
    assert len(checkpoint_paths(tmp_path)) == 2


def test_folds_of_two_runs_are_refused(tmp_path):
    """A retrain killed after its first fold leaves a new fold_0 beside the old run's folds (issue 27, family 1)."""
    folder = kfold_folder(tmp_path / "unet", folds=3)
    assert read_card(folder)[0].folds == 3  # folders written before run ids existed load as before
    for k in range(3):
        path = folder / f"fold_{k}" / "best.pt"
        save_checkpoint(path, load_checkpoint(path) | {"run": "new" if k == 0 else "old"})
    write_ensemble(folder, 3, Threshold(0.42, "test", True), "old")
    with pytest.raises(MedsegError, match=r"fold_1/best\.pt: trained by another run than .*fold_0/best\.pt"):
        read_card(folder)
    path = folder / "fold_0" / "best.pt"
    save_checkpoint(path, load_checkpoint(path) | {"run": "old"})
    assert read_card(folder)[0].threshold.value == 0.42
    write_ensemble(folder, 3, Threshold(0.42, "test", True), "newer")
    with pytest.raises(MedsegError, match=r"ensemble\.json: written by another run than its fold checkpoints"):
        read_card(folder)


def _tiny_weights() -> dict:
    from models import build_model

    torch.manual_seed(0)
    return build_model("unet", PRE["channels"], **TINY["unet"]).state_dict()


def test_the_card_train_writes_is_the_card_read_back(tmp_path):
    """best.pt as a run leaves it after an epoch (untuned), then as the finished run leaves it."""
    best, weights = tmp_path / "best.pt", _tiny_weights()
    header = Header("unet", TINY["unet"], PRE["channels"], dict(PRE))
    write_best(best, header, weights, epoch=3, val_dice=0.61, threshold=0.5)
    card, (ckpt,) = read_card(best)
    assert card.header == header and card.folds == 1 and card.checkpoints == [best]
    assert card.threshold == Threshold(0.5, "default 0.5 (the checkpoint holds no val threshold)", tuned=False)
    assert card.computes == [Compute()] and card.batch_size == 16  # no record yet: the default batch
    assert ckpt["epoch"] == 3 and ckpt["val_dice"] == 0.61 and "fold" not in ckpt
    compute = Compute("AMD EPYC", "fp32", "2.x", 8, 12, 90.5, 24.1, 1480.0)
    finalise_best(best, Threshold(0.37, "best pixel F1 on the val split", True), compute)
    card, _ = read_card(best)
    assert card.threshold == Threshold(0.37, "best pixel F1 on the val split", True)
    assert card.computes == [compute] and card.batch_size == 8
    assert card.header == header  # finalising keeps the header and the weights
    assert all(torch.equal(load_checkpoint(best)["state_dict"][k], v) for k, v in weights.items())


def test_a_fold_header_carries_its_fold_and_run(tmp_path):
    header = Header("unet", TINY["unet"], PRE["channels"], dict(PRE), fold=1, folds=3, run="abc")
    assert list(header.fields()) == ["model", "model_params", "in_channels", "preprocess", "fold", "folds", "run"]
    write_last(tmp_path / "last.pt", header, _tiny_weights(), {"train_state": {"epoch": 2}})
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert Header.read(ckpt, tmp_path / "last.pt") == header and ckpt["train_state"] == {"epoch": 2}


def test_a_regions_threshold_round_trips_through_ensemble_json(tmp_path):
    folder = kfold_folder(tmp_path / "unet", folds=2)
    write_ensemble(folder, 2, Threshold(0.5, "per region, out of fold", True, [0.3, 0.6]))
    assert read_ensemble(folder)["class_thresholds"] == [0.3, 0.6]
    card, _ = read_card(folder)  # a binary model: the per-region list is not checked against regions
    assert card.threshold == Threshold(0.5, "per region, out of fold", True, [0.3, 0.6]) and card.folds == 2
