"""The training loop: schedule, learning on real phantom slices, exact resume from last.pt, what it
writes when, and the val Dice counted on the device."""
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import medseg.model_card as model_card
import medseg.training as training
from medseg.model_card import Header, load_checkpoint
from medseg.training import Recipe, RunDirs, TrainData, lr_factor, make_optimizer, train
from models import build_model
from medseg.losses import LossParams
from medseg.metrics import global_dice
from medseg.params import TrainParams
from tests.conftest import no_augment, read_slices, shipped, slice_arrays



def test_lr_schedule_warmup_cosine_floor():
    cfg = shipped(TrainParams, scheduler="cosine", warmup_epochs=2, epochs=12, lr=1e-2, min_lr=1e-4)
    factors = [lr_factor(e, cfg) for e in range(12)]
    assert factors[0] == pytest.approx(1 / 3) and factors[1] == pytest.approx(2 / 3)
    assert factors[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[2:], factors[3:]))
    assert factors[-1] > 1e-2 and lr_factor(12, cfg) == pytest.approx(1e-2)
    assert lr_factor(5, cfg.with_values(scheduler="none")) == 1.0


def test_poly_schedule_is_nnunets_decay_and_sgd_takes_the_momentum():
    cfg = shipped(TrainParams, scheduler="poly", warmup_epochs=0, epochs=10, lr=1e-2, min_lr=0.0)
    assert [lr_factor(e, cfg) for e in (0, 5)] == pytest.approx([1.0, 0.5 ** 0.9])
    assert lr_factor(10, cfg) == 0.0 and lr_factor(9, cfg) == pytest.approx(0.1 ** 0.9)
    sgd = make_optimizer(torch.nn.Linear(2, 1), cfg.with_values(optimizer="sgd", momentum=0.99, weight_decay=3e-5),
                         torch.device("cpu"))
    assert sgd.param_groups[0]["momentum"] == 0.99 and sgd.param_groups[0]["nesterov"]


@pytest.fixture(scope="module")
def data(msd_phantom) -> TrainData:
    images, masks = slice_arrays(read_slices(msd_phantom, "msd"))
    positive = masks.reshape(len(masks), -1).any(1)
    train_idx = np.flatnonzero(positive)[:12]
    return TrainData(images[train_idx], masks[train_idx], np.ones(len(train_idx), np.int64),
                     images[train_idx], masks[train_idx])


def config(epochs: int, ema: float = 0.0) -> TrainParams:
    return shipped(TrainParams, epochs=epochs, ema=ema, batch_size=4, patience=0, lr=0.01, warmup_epochs=0,
                   device="cpu", amp="off")


def run(tmp: Path, data: TrainData, epochs: int, hflip: float = 0.5, ema: float = 0.0):
    torch.manual_seed(0)
    model = build_model("unet", 1, width=8)
    header = Header("unet", {"width": 8}, 1, {"size": data.train_images.shape[1], "channels": 1})
    aug = no_augment().with_values(hflip=hflip)
    state = train(model, header, data, Recipe(config(epochs, ema), shipped(LossParams), aug),
                  RunDirs(tmp / "models", tmp / "live"))
    return state, load_checkpoint(tmp / "models" / "last.pt")


def test_learns_on_phantom_slices(tmp_path, data):
    state, last = run(tmp_path, data, epochs=20, hflip=0.0)
    losses = np.loadtxt(tmp_path / "live/plots/metrics/train_loss.tsv", skiprows=1, usecols=1)
    assert losses[-1] < 0.6 * losses[0]
    assert state.best_dice > 0.7
    best = load_checkpoint(tmp_path / "models" / "best.pt")
    assert best["model"] == "unet" and best["val_dice"] == pytest.approx(state.best_dice)
    norms = np.loadtxt(tmp_path / "live/plots/metrics/grad_norm.tsv", skiprows=1, usecols=1)
    assert len(norms) == 20 and (norms > 0).all() and np.isfinite(norms).all()
    grids = sorted((tmp_path / "live/plots/images/val_predictions").glob("*.png"), key=lambda p: int(p.stem))
    assert [int(p.stem) for p in grids] == list(range(20))  # one per epoch, named by its dvclive step
    first, last_grid = (cv2.imread(str(p)) for p in (grids[0], grids[-1]))
    h, w = data.val_images.shape[1:3]
    assert first.shape == (4 * h, 3 * w, 3)
    truth = last_grid[:, w: 2 * w, 0] > 127
    predicted = last_grid[:, 2 * w:, 0] > 127
    assert (truth & predicted).sum() > 0.5 * truth.sum()  # by the last epoch the prediction column overlaps the truth


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, data, monkeypatch):
    _, reference = run(tmp_path / "a", data, epochs=3)
    real_validate, calls = training._validate, []

    def dies_in_epoch_three(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed after two checkpoints
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(training, "_validate", dies_in_epoch_three)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", data, epochs=3)
    assert load_checkpoint(tmp_path / "b/models/last.pt")["train_state"]["epoch"] == 2
    monkeypatch.setattr(training, "_validate", real_validate)
    state, resumed = run(tmp_path / "b", data, epochs=3)
    assert state.epoch == 3 and state.finished
    for key, tensor in reference["state_dict"].items():
        assert torch.equal(tensor, resumed["state_dict"][key]), key
    steps = np.loadtxt(tmp_path / "b/live/plots/metrics/val_dice.tsv", skiprows=1, usecols=0)
    assert list(steps) == [0, 1, 2]


def test_kill_between_checkpoint_and_dvclive_step_logs_each_epoch_once(tmp_path, data, monkeypatch):
    """The worst moment: last.pt of epoch 1 is written, dvclive's summary still says nothing."""
    _, reference = run(tmp_path / "a", data, epochs=3)
    real_save = model_card.save_checkpoint

    def dies_after_first_last_pt(path, payload):
        real_save(path, payload)
        if path.name == "last.pt":
            raise KeyboardInterrupt

    monkeypatch.setattr(model_card, "save_checkpoint", dies_after_first_last_pt)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", data, epochs=3)
    monkeypatch.setattr(model_card, "save_checkpoint", real_save)
    run(tmp_path / "b", data, epochs=3)
    for name in ("val_dice", "train_loss", "lr"):
        resumed = np.loadtxt(tmp_path / f"b/live/plots/metrics/{name}.tsv", skiprows=1, usecols=(0, 1))
        expected = np.loadtxt(tmp_path / f"a/live/plots/metrics/{name}.tsv", skiprows=1, usecols=(0, 1))
        assert np.array_equal(resumed, expected), name
    summary = (tmp_path / "b/live/metrics.json").read_text()
    assert summary == (tmp_path / "a/live/metrics.json").read_text()


def test_ema_keeps_the_average_as_the_best_model(tmp_path, data):
    state, last = run(tmp_path, data, epochs=2, ema=0.9)
    best = load_checkpoint(tmp_path / "models" / "best.pt")
    key = next(k for k in best["state_dict"] if k.endswith("weight"))
    assert last["ema"] and not torch.equal(best["state_dict"][key], last["state_dict"][key])
    model = build_model("unet", 1, width=8)
    model.load_state_dict(best["state_dict"])  # the averaged weights load into a plain model


def test_kill_after_dvclive_logged_but_before_last_pt_resumes_exactly(tmp_path, data, monkeypatch):
    """The other worst moment: dvclive has the rows of epoch 2, last.pt still holds epoch 1, so
    the resume must drop those rows (rewind_live) and train epoch 2 again."""
    ref_state, reference = run(tmp_path / "a", data, epochs=3)
    real_save, saves = model_card.save_checkpoint, []

    def dies_before_second_last_pt(path, payload):
        if path.name == "last.pt":
            saves.append(1)
            if len(saves) == 2:
                raise KeyboardInterrupt
        real_save(path, payload)

    monkeypatch.setattr(model_card, "save_checkpoint", dies_before_second_last_pt)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", data, epochs=3)
    assert load_checkpoint(tmp_path / "b/models/last.pt")["train_state"]["epoch"] == 1
    logged = np.loadtxt(tmp_path / "b/live/plots/metrics/val_dice.tsv", skiprows=1, usecols=0)
    assert list(logged) == [0, 1]  # epoch 2 logged, not checkpointed: exactly the moment
    monkeypatch.setattr(model_card, "save_checkpoint", real_save)
    state, resumed = run(tmp_path / "b", data, epochs=3)
    assert (state.epoch, state.best_dice, state.best_epoch) == (ref_state.epoch, ref_state.best_dice,
                                                                ref_state.best_epoch)
    for key, tensor in reference["state_dict"].items():
        assert torch.equal(tensor, resumed["state_dict"][key]), key
    for name in ("val_dice", "val_loss", "train_loss", "lr"):
        got = np.loadtxt(tmp_path / f"b/live/plots/metrics/{name}.tsv", skiprows=1, usecols=(0, 1))
        expected = np.loadtxt(tmp_path / f"a/live/plots/metrics/{name}.tsv", skiprows=1, usecols=(0, 1))
        assert np.array_equal(got, expected), name
    assert (tmp_path / "b/live/metrics.json").read_text() == (tmp_path / "a/live/metrics.json").read_text()


def test_last_pt_and_the_image_grid_every_k_epochs_and_always_at_the_end(tmp_path, data, monkeypatch):
    real_save, written = model_card.save_checkpoint, []

    def recording(path, payload):
        if path.name == "last.pt":
            written.append(payload["train_state"]["epoch"])
        real_save(path, payload)

    monkeypatch.setattr(model_card, "save_checkpoint", recording)
    torch.manual_seed(0)
    cfg = config(7).with_values(checkpoint_every=3, image_every=3)
    header = Header("unet", {"width": 8}, 1, {"size": data.train_images.shape[1], "channels": 1})
    state = train(build_model("unet", 1, width=8), header, data, Recipe(cfg, shipped(LossParams), no_augment()),
                  RunDirs(tmp_path / "models", tmp_path / "live"))
    val_dice = np.loadtxt(tmp_path / "live/plots/metrics/val_dice.tsv", skiprows=1, usecols=1)
    improved = {e + 1 for e in range(7) if val_dice[e] > max(val_dice[:e], default=-1)}
    assert state.epoch == 7 and len(val_dice) == 7  # the curves every epoch
    assert written == sorted(improved | {3, 6, 7})  # every third, the last, and each epoch that wrote best.pt
    assert len(written) < 7, (written, improved)  # some epochs wrote no last.pt
    grids = sorted(int(p.stem) for p in (tmp_path / "live/plots/images/val_predictions").glob("*.png"))
    assert grids == [2, 5, 6]  # dvclive steps of epochs 3, 6 and the last, 7


def test_the_val_dice_counted_on_the_device_is_the_numpy_dice(data):
    torch.manual_seed(0)
    model = build_model("unet", 1, width=8)
    recipe = Recipe(config(1).with_values(threshold=0.5), shipped(LossParams), no_augment())
    run_ = training.build_run(model, Header("unet", {"width": 8}, 1, {}), recipe)
    shown = np.array([5, 0, 9])
    _, dice, shown_probs = training._validate(run_, data, shown)
    probs = training.predict_probs(run_.scored, data.val_images, run_.device, 4)
    assert dice == global_dice(probs >= 0.5, data.val_masks.astype(bool))
    assert np.array_equal(shown_probs, probs[shown])  # in the order asked for


def test_last_pt_is_written_in_the_background_and_waited_for_at_the_end(tmp_path, monkeypatch):
    finished = []

    def slow_write(path, *args):
        time.sleep(0.5)
        finished.append(path)

    started = time.perf_counter()
    with training.BackgroundWriter() as writer:
        writer.submit(slow_write, tmp_path / "a")
        assert time.perf_counter() - started < 0.3 and not finished  # the loop goes on
    assert finished == [tmp_path / "a"]  # leaving waits for it

    with training.BackgroundWriter(background=False) as writer:  # a CPU run: at once
        writer.submit(slow_write, tmp_path / "c")
        assert finished[-1] == tmp_path / "c"

    def failing(path):
        raise OSError(f"{path}: no space left on device")

    with pytest.raises(OSError, match="no space left"):
        with training.BackgroundWriter() as writer:
            writer.submit(failing, tmp_path / "b")
            time.sleep(0.1)
            writer.check()


def test_the_device_data_path_learns_as_the_loader_path_does(tmp_path, data):
    """train.data_path: device on a CPU: the slices held as tensors, augmented in batches (their draws
    fixed by the seeds: test_device_data); it learns about as well as the loader path."""
    header = Header("unet", {"width": 8}, 1, {"size": data.train_images.shape[1], "channels": 1})
    curves = {}
    for name, path in (("a", "device"), ("c", "loader")):
        torch.manual_seed(0)
        cfg = config(12).with_values(data_path=path)  # past the steep part of the curve on every CPU kind
        train(build_model("unet", 1, width=8), header, data,
              Recipe(cfg, shipped(LossParams), no_augment().with_values(hflip=0.5, affine=0.5, noise=0.3)),
              RunDirs(tmp_path / name / "models", tmp_path / name / "live"))
        curves[name] = np.loadtxt(tmp_path / name / "live/plots/metrics/val_dice.tsv", skiprows=1, usecols=1)
    assert curves["a"].max() > 0.5 and curves["a"].max() > curves["c"].max() - 0.15


@pytest.mark.parametrize("select, kept, stopped_at", [("best", [1, 2], 4), ("final", [6], 6)])
def test_select_keeps_the_best_val_epoch_or_the_schedules_last(tmp_path, monkeypatch, select, kept, stopped_at):
    """best: the epoch of the best val Dice, and patience 2 stops two epochs after it; final: only the last
    epoch of the schedule goes to best.pt, however val moved, and patience does not stop it."""
    from types import SimpleNamespace

    from medseg.resume import RunState

    written = []
    monkeypatch.setattr(training, "write_best", lambda path, header, weights, epoch, dice, thr: written.append(epoch))
    run = SimpleNamespace(state=RunState(), cfg=config(6).with_values(patience=2, select=select),
                          info=SimpleNamespace(is_main=True), header=None, scored=torch.nn.Linear(1, 1))
    for dice in (0.5, 0.6, 0.55, 0.4, 0.58, 0.59):
        run.state.epoch += 1
        training.select_and_stop(run, training.Epoch(0.0, 0.0, 0.0, 0.0, dice, None), tmp_path / "best.pt", False)
        if run.state.finished:
            break
    assert written == kept and run.state.epoch == stopped_at and run.state.best_epoch == kept[-1]
