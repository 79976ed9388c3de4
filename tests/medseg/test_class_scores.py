"""Per-class and macro scores on hand-made label maps whose Dice is known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medseg.class_scores import Predicted, class_comparisons, score_classes
from medseg.reporting import classes_markdown
from medseg.classes import from_params
from medseg.params import EvaluateParams
from tests.conftest import shipped

CFG = shipped(EvaluateParams, empty="one", nsd_tolerance_mm=2.0, min_area=0, largest_component=False, min_volume=0,
              largest_volume=False, resamples=2000, seed=0, pr_max_pixels=100_000, threshold="auto")
EXCLUSIVE = from_params({"organ": [1], "lesion": [2]}, "exclusive")


def rows(groups: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"slice_id": [f"{g}_0" for g in groups], "group": groups, "index": 0, "spacing": "",
                         "fg_pixels": 1})


def one_hot(codes: np.ndarray, channels: int) -> np.ndarray:
    """Codes (N, H, W) -> (N, channels, H, W) probabilities peaked at each pixel's code."""
    probs = np.full((len(codes), channels, *codes.shape[1:]), 0.1, np.float32)
    for c in range(channels):
        probs[:, c][codes == c] = 0.8
    return probs


def test_exclusive_per_class_and_macro_dice_are_the_hand_computed_ones():
    truth = np.zeros((2, 8, 8), np.uint8)
    truth[0, 0:2, 0:2] = 1
    truth[0, 4:6, 4:6] = 2
    truth[1, 0:2, 0:2] = 1  # case b: no lesion
    pred = truth.copy()
    pred[0, 5, 4:6] = 0  # case a's lesion: 2 of 4 pixels found, none false -> Dice 2*2/(2+4)
    cases = rows(["a", "b"])
    result = score_classes(EXCLUSIVE, None, CFG, Predicted(cases, one_hot(pred, 3), truth), Predicted(cases, one_hot(pred, 3), truth))
    organ, lesion = result.metrics["classes"]["organ"], result.metrics["classes"]["lesion"]
    assert organ["dice"] == pytest.approx(1.0)
    assert lesion["dice"] == pytest.approx((2 / 3 + 1.0) / 2)  # case b: empty truth, empty prediction -> 1 (rule one)
    assert lesion["dice_fg"] == pytest.approx(2 / 3)
    assert result.cases["dice"].tolist() == pytest.approx([(1 + 2 / 3) / 2, 1.0])
    assert result.metrics["dice"] == pytest.approx(((1 + 2 / 3) / 2 + 1.0) / 2)
    assert result.metrics["dice_ci_low"] <= result.metrics["dice"] <= result.metrics["dice_ci_high"]
    assert result.masks.shape == (2, 2, 8, 8) and result.masks[0, 1].sum() == 2


def test_regions_overlap_and_each_takes_its_threshold():
    regions = from_params({"whole": [1, 2], "core": [2]}, "regions")
    truth = regions.encode(np.array([[[1, 1, 2, 0]], [[0, 2, 2, 0]]]))  # two cases of one 1x4 slice
    probs = np.zeros((2, 2, 1, 4), np.float32)
    probs[:, 0] = np.array([[[0.6, 0.6, 0.9, 0.1]], [[0.1, 0.9, 0.9, 0.1]]])  # whole: right at 0.5
    probs[:, 1] = np.array([[[0.3, 0.3, 0.7, 0.0]], [[0.0, 0.7, 0.35, 0.0]]])  # core: needs a cut below 0.35
    cases = rows(["a", "b"])
    at_half = score_classes(regions, [0.5, 0.5], CFG, Predicted(cases, probs, truth), Predicted(cases, probs, truth))
    assert at_half.metrics["classes"]["whole"]["dice"] == pytest.approx(1.0)
    assert at_half.metrics["classes"]["core"]["dice"] == pytest.approx((1.0 + 2 / 3) / 2)
    tuned = score_classes(regions, [0.5, 0.32], CFG, Predicted(cases, probs, truth), Predicted(cases, probs, truth))
    assert tuned.metrics["classes"]["core"]["dice"] == pytest.approx(1.0)
    assert tuned.metrics["classes"]["core"]["threshold"] == pytest.approx(0.32)


def test_paired_tests_per_class_and_the_summary_section():
    rng = np.random.default_rng(0)
    tables = {m: {c: pd.DataFrame({"group": [f"g{i}" for i in range(12)], "dice": rng.uniform(0.5, 1, 12)})
                  for c in ("organ", "lesion")} for m in ("unet", "deeplab")}
    pairs = class_comparisons(tables, 2000, 0)
    assert set(pairs) == {"organ", "lesion"} and all(len(p) == 1 and p[0]["cases"] == 12 for p in pairs.values())
    metrics = {m: {"classes": {c: {"dice": 0.8, "dice_ci_low": 0.7, "dice_ci_high": 0.9} for c in ("organ", "lesion")}}
               for m in tables}
    text = classes_markdown(metrics, pairs)
    assert "| unet | lesion | 0.800 [0.700, 0.900]" in text and "### Paired comparison on organ" in text
