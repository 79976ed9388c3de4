"""medseg.crossval: the pooled out-of-fold estimate with its CI and the per-fold spread."""
import numpy as np
import pandas as pd
import pytest

from medseg.crossval import cv_metrics
from medseg.reporting import cv_markdown
from medseg.oof import fold_of_rows


def oof_table() -> pd.DataFrame:
    dice = [0.9, 0.8, 0.7, 0.5, 0.6, 1.0]
    return pd.DataFrame({"group": list("abcdef"), "fold": [0, 0, 0, 1, 1, 1], "dice": dice,
                         "gt_voxels": [5, 5, 5, 5, 5, 0]})


def test_pooled_and_per_fold_numbers():
    cv = cv_metrics(oof_table(), 2000, 0)
    assert cv["folds"] == 2 and cv["cases"] == 6
    assert cv["dice"] == pytest.approx(0.75)
    assert cv["dice_ci_low"] < 0.75 < cv["dice_ci_high"]
    assert cv["fold_dice"] == {"fold_0": pytest.approx(0.8), "fold_1": pytest.approx(0.7)}
    assert cv["fold_dice_mean"] == pytest.approx(0.75)
    assert cv["fold_dice_sd"] == pytest.approx(np.std([0.8, 0.7], ddof=1))
    assert cv["dice_fg"] == pytest.approx(0.7)  # the lesion-free case f left out


def test_markdown_puts_the_cv_estimate_beside_the_test_score():
    cv = cv_metrics(oof_table(), 2000, 0)
    text = cv_markdown({"unet": {"cv": cv, "dice": 0.8, "dice_ci_low": 0.7, "dice_ci_high": 0.9}}, [])
    assert "| unet | 0.750 [" in text and "0.750 ± 0.071" in text and "0.800 [0.700, 0.900]" in text


def test_fold_of_rows():
    assert fold_of_rows([2, 0, 3]).tolist() == [0, 0, 2, 2, 2]
