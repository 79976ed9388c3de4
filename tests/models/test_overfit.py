"""Overfit check (seed 000's overfit_test): every model, trained by the real loop on a handful of
phantom slices, drives its loss down and fits them to Dice >= 0.9."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from medseg.datasets.msd import list_cases, read_case
from medseg.datasets.phantom_msd import write as write_msd
from medseg.training import TrainData, train
from models import build_model

REPO = Path(__file__).resolve().parents[2]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
SMALL = {
    "unet": {"width": 8},
    "attn_unet": {"width": 8},
    "deeplab": {"encoder": "resnet18", "decoder_channels": 32, "pretrained": False},
    "upernet": {"encoder": "resnet18", "decoder_channels": 32, "pretrained": False},
}


@pytest.fixture(scope="module")
def handful(tmp_path_factory) -> TrainData:
    root = tmp_path_factory.mktemp("raw") / "phantom"
    write_msd(root, cases=3, depth=12, size=64, seed=5)
    slices = [s for c in list_cases(root) for s in read_case(c, PARAMS["convert"])]
    chosen = sorted(slices, key=lambda s: -s.mask.sum())[:6]  # the six largest lesions
    images = np.stack([np.round(s.image * 255).astype(np.uint8) for s in chosen])
    masks = np.stack([s.mask.astype(np.uint8) for s in chosen])
    return TrainData(images, masks, np.ones(len(chosen), np.int64), images, masks)


@pytest.mark.parametrize("name", SMALL)
def test_overfits_a_handful_of_slices(name, handful, tmp_path):
    cfg = {**PARAMS["train"], "epochs": 60, "batch_size": 3, "lr": 0.01, "warmup_epochs": 0,
           "patience": 0, "device": "cpu", "amp": "off", "weight_decay": 0.0, "threshold": 0.5}
    no_aug = {k: 0.0 for k in PARAMS["augment"]}
    model = build_model(name, 1, **SMALL[name])
    header = {"model": name, "model_params": SMALL[name], "in_channels": 1, "preprocess": {}}
    state = train(model, name, header, handful, cfg, PARAMS["loss"], no_aug, tmp_path / "m", tmp_path / "live")
    losses = np.loadtxt(tmp_path / "live/plots/metrics/train_loss.tsv", skiprows=1, usecols=1)
    assert losses[-1] < 0.3 * losses[0]
    assert state.best_dice >= 0.9, f"{name} reached only {state.best_dice:.3f}"
