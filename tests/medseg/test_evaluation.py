import numpy as np
import pandas as pd
import pytest

from medseg.evaluation import case_dice, per_image_table, tune_min_area
from medseg.params import EvaluateParams
from tests.conftest import shipped


def two_cases() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Case a: one 5x5 lesion predicted exactly; case b: no lesion, three isolated false-positive pixels."""
    slices = pd.DataFrame({"slice_id": ["a0", "a1", "b0", "b1"], "group": ["a", "a", "b", "b"],
                           "index": [0, 1, 0, 1]})
    gt = np.zeros((4, 32, 32), bool)
    gt[0, 5:10, 5:10] = True
    probs = gt.astype(np.float32) * 0.9
    probs[2, 20, 20] = probs[2, 2, 28] = probs[3, 30, 3] = 0.8
    return slices, probs, gt


def test_case_dice_scores_each_volume_once():
    slices, probs, gt = two_cases()
    assert case_dice(slices, probs >= 0.5, gt, "one") == pytest.approx(0.5)  # a: 1, b: any FP -> 0
    assert case_dice(slices, probs >= 0.5, gt, "nan") == pytest.approx(1.0)  # b left out


def test_tune_min_area_removes_speckle_but_keeps_the_lesion():
    slices, probs, gt = two_cases()
    assert tune_min_area(slices, probs, gt, 0.5, "one", False) == 4  # smallest area that removes 1-px specks
    assert tune_min_area(slices, probs, gt, 0.85, "one", False) == 0  # nothing to remove above 0.85


def test_siim_column_follows_the_one_rule_whatever_the_configured_rule():
    slices, probs, gt = two_cases()
    pred = probs >= 0.5
    for rule in ("one", "nan", "zero"):
        table = per_image_table(slices, pred, gt, rule)
        assert table["siim_dice"].tolist() == [1.0, 1.0, 0.0, 0.0]  # a1: empty and predicted empty
        assert table["pred_pixels"].tolist() == [25, 0, 2, 1]


def test_detection_rates_and_dice_fg_on_hand_made_masks():
    from medseg.evaluation import detection, per_case_table, uncertainty

    slices, probs, gt = two_cases()
    pred = probs >= 0.5  # case a: exact; case b (lesion-free): specks in both slices
    images, cases = per_image_table(slices, pred, gt, "one"), per_case_table(slices, pred, gt, "one")
    rates = detection(images, cases)
    assert rates["fp_case_rate"] == 1.0 and rates["fg_cases"] == 1 and rates["empty_cases"] == 1
    assert rates["fp_image_rate"] == pytest.approx(2 / 3)  # a1, b0, b1 are empty; b0 and b1 have specks
    clean = np.zeros_like(pred)
    clean[0] = pred[0]
    images, cases = per_image_table(slices, clean, gt, "one"), per_case_table(slices, clean, gt, "one")
    assert detection(images, cases)["fp_case_rate"] == 0.0 and detection(images, cases)["fp_image_rate"] == 0.0
    scores = uncertainty(per_case_table(slices, pred, gt, "one"), 2_000, 0)
    assert scores["dice_fg"] == 1.0 and scores["dice_fg_ci_low"] == scores["dice_fg_ci_high"] == 1.0
    assert scores["dice_ci_low"] == 0.0 and scores["dice_ci_high"] == 1.0  # cases scoring 1 and 0


OLD_KEYS = {"dice", "iou", "dice_fg", "dice_ci_low", "dice_ci_high", "iou_ci_low", "iou_ci_high", "dice_fg_ci_low",
            "dice_fg_ci_high", "fp_case_rate", "fp_image_rate", "fg_cases", "empty_cases", "ap", "hd95_px", "hd95_mm",
            "image_dice", "image_iou", "image_precision", "image_recall", "global_dice", "global_iou", "siim_dice",
            "isic_jaccard", "threshold", "min_area", "cases", "images", "empty_rule"}


def test_metrics_json_gains_pixel_and_surface_scores_and_keeps_its_keys():
    from medseg.evaluation import Decided, per_case_table, summarize
    from medseg.reporting import summary_markdown

    slices, probs, gt = two_cases()
    slices["spacing"] = "2.0x2.0x5.0"
    pred = probs >= 0.5  # case a exact; case b (lesion-free) has specks
    images, cases = per_image_table(slices, pred, gt, "one"), per_case_table(slices, pred, gt, "one", 2.0)
    cfg = shipped(EvaluateParams, pr_max_pixels=10_000, seed=0, resamples=2_000, empty="one", nsd_tolerance_mm=2.0)
    post = {"min_area": 0, "largest_component": False, "min_volume": 0, "largest_volume": False}
    metrics, _ = summarize(images, cases, Decided(probs, 0.5, post, pred, gt), cfg)
    assert OLD_KEYS <= metrics.keys()
    assert metrics["min_volume"] == 0 and metrics["largest_volume"] is False
    assert metrics["case_nsd"] == pytest.approx(0.5)  # a: 1, b: specks on an empty truth -> 0 under `one`
    assert metrics["nsd_tolerance_mm"] == 2.0 and metrics["nsd_units"] == "mm"
    assert metrics["case_sensitivity"] == pytest.approx(0.5) and metrics["case_specificity"] == pytest.approx(
        (1.0 + (2048 - 3) / 2048) / 2)
    assert metrics["case_accuracy"] == pytest.approx((1.0 + (2048 - 3) / 2048) / 2)
    # per image: a0 exact, a1 empty and clean, b0 two specks, b1 one speck (of 1024 pixels each)
    assert metrics["image_sensitivity"] == metrics["image_recall"] == pytest.approx(0.5)
    assert metrics["image_specificity"] == pytest.approx((1 + 1 + 1022 / 1024 + 1023 / 1024) / 4)
    assert metrics["image_accuracy"] == metrics["image_specificity"]  # no false negatives, so TN share = accuracy
    text = summary_markdown({"unet": metrics}, "one", [], {})
    assert "| case_nsd | case_sensitivity |" in text and "`case_nsd`:" in text
    assert "2 test cases (1 with foreground, 1 lesion-free). **Fewer than 10 test cases: every CI and test" in text


def test_volume_post_processing_is_chosen_on_the_cases_it_helps():
    """tune_min_volume picks the smallest candidate that removes a false-positive speck; with every key
    `auto`, choose_postprocessing keeps only the largest 3D component when that scores best, and leaves a
    case with two true lesions alone; explicit values are kept as given."""
    import pandas as pd

    from medseg.evaluation import choose_postprocessing, tune_min_volume

    slices = pd.DataFrame({"slice_id": ["a0", "a1", "a2"], "group": ["a"] * 3, "index": [0, 1, 2]})
    gt = np.zeros((3, 40, 40), bool)
    gt[0:2, 5:15, 5:15] = True  # a 200-voxel lesion over two slices ...
    gt[2, 9:11, 9:11] = True  # ... whose thin end (4 pixels) a 2D min_area of 10 or more would cut
    pred = gt.copy()
    pred[0, 30:36, 30:36] = True  # a 36-voxel false positive, 3D-isolated
    assert tune_min_volume(slices, pred, gt, "one") == 50  # the first candidate above 36 voxels
    cfg = shipped(EvaluateParams, min_area="auto", largest_component=False, min_volume="auto", largest_volume="auto",
                  empty="one")
    probs = pred.astype(np.float32)
    chosen = choose_postprocessing(cfg, slices, probs, gt, 0.5)
    assert chosen["min_area"] == 0 and (chosen["min_volume"] == 50 or chosen["largest_volume"] is True)
    assert chosen["min_volume"] == 50  # ties between min_volume and largest go to the earlier candidate
    two = gt.copy()
    two[:, 30:33, 30:33] = True  # a second true lesion: nothing to remove
    assert choose_postprocessing(cfg, slices, two.astype(np.float32), two, 0.5) == {
        "min_area": 0, "largest_component": False, "min_volume": 0, "largest_volume": False}
    explicit = cfg.with_values(min_area=4, largest_volume=True)
    assert choose_postprocessing(explicit, slices, probs, gt, 0.5) == {
        "min_area": 4, "largest_component": False, "min_volume": 0, "largest_volume": True}
