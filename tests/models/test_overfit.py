"""Overfit check (seed 000's overfit_test): every model, trained by the real loop on a handful of
phantom slices, drives its loss down and fits them to Dice >= 0.9."""
import numpy as np
import pytest

from medseg.model_card import Header
from medseg.training import Recipe, RunDirs, TrainData, train
from models import build_model
from medseg.losses import LossParams
from medseg.params import TrainParams
from tests.conftest import no_augment, read_slices, shipped, slice_arrays

SMALL = {
    "unet": {"width": 8},
    "attn_unet": {"width": 8},
    "deeplab": {"encoder": "resnet18", "decoder_channels": 32, "pretrained": False},
    "upernet": {"encoder": "resnet18", "decoder_channels": 32, "pretrained": False},
}


@pytest.fixture(scope="module")
def handful(make_phantom) -> TrainData:
    slices = read_slices(make_phantom("msd", cases=3, depth=12, size=64, seed=5), "msd")
    chosen = sorted(slices, key=lambda s: -s.mask.sum())[:6]  # the six largest lesions
    images, masks = slice_arrays(chosen)
    return TrainData(images, masks, np.ones(len(chosen), np.int64), images, masks)


@pytest.mark.parametrize("name", SMALL)
def test_overfits_a_handful_of_slices(name, handful, tmp_path):
    cfg = shipped(TrainParams, epochs=60, batch_size=3, lr=0.01, warmup_epochs=0, patience=0, device="cpu", amp="off",
                  weight_decay=0.0, threshold=0.5)
    model = build_model(name, 1, **SMALL[name])
    header = Header(name, SMALL[name], 1, {"size": handful.train_images.shape[1], "channels": 1})
    state = train(model, header, handful, Recipe(cfg, shipped(LossParams), no_augment()),
                  RunDirs(tmp_path / "m", tmp_path / "live"))
    losses = np.loadtxt(tmp_path / "live/plots/metrics/train_loss.tsv", skiprows=1, usecols=1)
    assert losses[-1] < 0.3 * losses[0]
    assert state.best_dice >= 0.9, f"{name} reached only {state.best_dice:.3f}"
