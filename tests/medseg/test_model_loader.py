"""medseg.model_loader.check_fits_slices: a model scored on slices it was not trained on, or found in another
model's folder, is refused naming both sides (issue 27, family 2); the stage-level case is in
tests/stages/test_stale_models.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from medseg.errors import MedsegError
from medseg.model_loader import check_fits_slices, load_trained
from tests.tiny_models import PRE, save_tiny

SLICES = Path("data/slices")


def test_the_slices_it_trained_on_pass(tmp_path):
    trained = load_trained(save_tiny(tmp_path / "best.pt"))
    check_fits_slices(trained, "unet", dict(PRE), SLICES)
    check_fits_slices(trained, "unet", PRE | {"normalize": "none"}, SLICES)  # stores written before normalize existed


@pytest.mark.parametrize(("slices_info", "needle"), [
    (PRE | {"size": 96}, "size 48 vs 96"),
    (PRE | {"channels": 3}, "channels 1 vs 3"),
    (PRE | {"window_level": 40}, "window_level -600 vs 40"),
    (PRE | {"normalize": "volume"}, "normalize None vs 'volume'"),
    (PRE | {"dataset": "lgg"}, "dataset 'phantom' vs 'lgg'"),
])
def test_other_slices_are_refused_naming_both_sides(tmp_path, slices_info, needle):
    trained = load_trained(save_tiny(tmp_path / "best.pt"))
    with pytest.raises(MedsegError, match=r"best\.pt: trained on other slices than data/slices/info\.json \(.*"
                                          + needle.replace("(", r"\(") + r".*\); run the train_unet stage again"):
        check_fits_slices(trained, "unet", slices_info, SLICES)


def test_another_models_checkpoint_is_refused(tmp_path):
    trained = load_trained(save_tiny(tmp_path / "unet" / "best.pt", "attn_unet"))
    with pytest.raises(MedsegError, match=r"unet/best\.pt: holds a attn_unet model, not unet; run the train_unet"):
        check_fits_slices(trained, "unet", dict(PRE), SLICES)
