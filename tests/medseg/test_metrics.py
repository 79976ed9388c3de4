"""Our metric definitions against independent computations (scikit-learn, SciPy, brute force)."""
import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from medseg.evaluation import per_case_table, per_image_table
from medseg.metrics import best_f1_threshold, global_dice, hd95, nsd, overlap_scores, pixel_pr, pixel_scores


@pytest.mark.parametrize("seed", range(5))
def test_overlap_matches_sklearn_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    gt = rng.random((40, 40)) < 0.2
    pred = rng.random((40, 40)) < 0.3
    s = overlap_scores(pred, gt, "one")
    assert s["dice"] == pytest.approx(f1_score(gt.ravel(), pred.ravel()))
    assert s["iou"] == pytest.approx(jaccard_score(gt.ravel(), pred.ravel()))
    assert s["precision"] == pytest.approx(precision_score(gt.ravel(), pred.ravel()))
    assert s["recall"] == pytest.approx(recall_score(gt.ravel(), pred.ravel()))


def test_empty_rules():
    empty = np.zeros((8, 8), bool)
    dot = empty.copy()
    dot[3, 4] = True
    assert overlap_scores(empty, empty, "one")["dice"] == 1.0
    assert overlap_scores(dot, empty, "one")["dice"] == 0.0
    assert np.isnan(overlap_scores(empty, empty, "nan")["dice"])
    assert overlap_scores(empty, empty, "zero")["iou"] == 0.0
    assert overlap_scores(empty, dot, "one") == {"dice": 0.0, "iou": 0.0, "precision": 0.0, "recall": 0.0}
    assert overlap_scores(dot, dot, "zero")["dice"] == 1.0  # single pixel hit
    assert global_dice(empty[None], empty[None]) == 1.0


def test_case_dice_restacks_a_volume_split_over_slices():
    rng = np.random.default_rng(0)
    gt = rng.random((12, 16, 16)) < 0.1
    pred = gt ^ (rng.random((12, 16, 16)) < 0.05)
    order = rng.permutation(12)  # slices arrive shuffled and interleaved with another case
    other = np.zeros((3, 16, 16), bool)
    slices = pd.DataFrame({"slice_id": [f"a{i}" for i in order] + ["b0", "b1", "b2"],
                           "group": ["a"] * 12 + ["b"] * 3, "index": list(order) + [0, 1, 2],
                           "spacing": ["1.0x1.0x2.0"] * 15})
    p = np.concatenate([pred[order], other])
    g = np.concatenate([gt[order], other])
    cases = per_case_table(slices, p, g, "one", nsd_tolerance_mm=2.0).set_index("group")
    assert cases.loc["a", "dice"] == pytest.approx(f1_score(gt.ravel(), pred.ravel()))
    assert cases.loc["b", "dice"] == 1.0 and np.isnan(cases.loc["b", "hd95_px"])
    images = per_image_table(slices, p, g, "nan")
    assert images["dice"].isna().sum() == sum(not x.any() for x in g)


def surface(mask):
    from scipy.ndimage import binary_erosion

    return np.argwhere(mask & ~binary_erosion(mask))


def test_hd95_matches_brute_force():
    a = np.zeros((30, 30), bool)
    b = np.zeros((30, 30), bool)
    a[5:15, 5:15] = True
    b[8:20, 6:22] = True
    d = cdist(surface(a), surface(b))
    brute = max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))
    assert hd95(a, b) == pytest.approx(brute, rel=1e-6)
    assert hd95(a, b, (2.0, 2.0)) == pytest.approx(2 * brute, rel=1e-6)
    assert np.isnan(hd95(a, np.zeros_like(b)))


def test_pixel_pr_and_threshold():
    rng = np.random.default_rng(1)
    gt = rng.random(5000) < 0.1
    probs = np.clip(gt * 0.6 + rng.random(5000) * 0.5, 0, 1)
    ap, precision, recall, thresholds = pixel_pr(probs, gt, 1_000_000, 0)
    from sklearn.metrics import average_precision_score

    assert ap == pytest.approx(average_precision_score(gt, probs))
    assert ap > 0.9
    t = best_f1_threshold(precision, recall, thresholds)
    assert 0.5 < t < 0.7  # positives sit in [0.6, 1.1], negatives in [0, 0.5]
    ap_sub, *_ = pixel_pr(probs, gt, 2000, 0)
    assert abs(ap_sub - ap) < 0.05


def test_challenge_metrics_siim_and_isic():
    gt = np.zeros((3, 10, 10), bool)
    pred = np.zeros_like(gt)
    gt[0, 0:4, 0:4] = True
    pred[0, 0:4, 0:3] = True  # IoU 12/16 = 0.75 -> kept
    gt[1, 0:4, 0:4] = True
    pred[1, 0:4, 0:2] = True  # IoU 0.5 -> counted 0 by ISIC
    pred[2, 5, 5] = True      # empty truth, one false pixel -> SIIM 0
    slices = pd.DataFrame({"slice_id": ["a", "b", "c"], "group": ["a", "b", "c"]})
    table = per_image_table(slices, pred, gt, "nan")
    assert table["isic_jaccard"].tolist() == pytest.approx([0.75, 0.0, 0.0])
    assert table["siim_dice"].tolist() == pytest.approx([24 / 28, 16 / 24, 0.0])
    assert np.isnan(table["dice"].iloc[2])  # the configured rule still governs `dice`


def square_pair(shift: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A 10x10 square in a 30x30 image and the same square moved down by `shift` rows."""
    gt = np.zeros((30, 30), bool)
    gt[10:20, 10:20] = True
    return np.roll(gt, shift, axis=0), gt


def test_pixel_scores_by_counting():
    pred, gt = square_pair()
    s = pixel_scores(pred, gt, "one")  # TP 90, FP 10, FN 10, TN 900 - 10 - 10 + ... of 900 pixels
    assert s["accuracy"] == pytest.approx((90 + 790) / 900)
    assert s["sensitivity"] == pytest.approx(90 / 100)
    assert s["specificity"] == pytest.approx(790 / 800)
    assert s["sensitivity"] == overlap_scores(pred, gt, "one")["recall"]


@pytest.mark.parametrize("seed", range(3))
def test_pixel_scores_match_sklearn(seed):
    from sklearn.metrics import accuracy_score

    rng = np.random.default_rng(seed)
    gt, pred = rng.random((40, 40)) < 0.2, rng.random((40, 40)) < 0.3
    s = pixel_scores(pred, gt, "nan")
    assert s["accuracy"] == pytest.approx(accuracy_score(gt.ravel(), pred.ravel()))
    assert s["sensitivity"] == pytest.approx(recall_score(gt.ravel(), pred.ravel()))
    assert s["specificity"] == pytest.approx(recall_score(~gt.ravel(), ~pred.ravel()))


def test_pixel_scores_empty_rules():
    empty, full = np.zeros((4, 4), bool), np.ones((4, 4), bool)
    dot = empty.copy()
    dot[1, 1] = True
    assert pixel_scores(empty, empty, "one") == {"accuracy": 1.0, "sensitivity": 1.0, "specificity": 1.0}
    assert pixel_scores(dot, empty, "one") == {"accuracy": 15 / 16, "sensitivity": 0.0, "specificity": 15 / 16}
    assert np.isnan(pixel_scores(dot, empty, "nan")["sensitivity"])
    assert pixel_scores(empty, empty, "zero")["sensitivity"] == 0.0
    assert pixel_scores(full, full, "one")["specificity"] == 1.0  # no negatives: the rule, mirrored
    assert pixel_scores(~dot, full, "one")["specificity"] == 0.0
    assert np.isnan(pixel_scores(full, full, "nan")["specificity"])


def test_nsd_of_a_square_shifted_by_one_pixel():
    pred, gt = square_pair()
    assert nsd(pred, gt, 1.0, None, "one") == pytest.approx(1.0)  # every boundary pixel within 1 px
    # at tolerance 0 only the edge pixels that both boundaries share count: the two side columns
    # (9 shared rows each) of 36 boundary pixels per square
    assert nsd(pred, gt, 0.0, None, "one") == pytest.approx(18 / 36)
    assert nsd(pred, gt, 0.5, (0.5, 0.5), "one") == pytest.approx(1.0)  # 1 px = 0.5 mm
    assert nsd(pred, gt, 0.5, (2.0, 2.0), "one") == pytest.approx(18 / 36)  # 1 px = 2 mm > 0.5 mm
    far, _ = square_pair(5)
    assert nsd(far, gt, 1.0, None, "one") < 0.5
    assert nsd(gt, gt, 0.0, None, "one") == 1.0


def test_nsd_empty_masks_follow_the_rule():
    pred, gt = square_pair()
    empty = np.zeros_like(gt)
    assert nsd(empty, empty, 2.0, None, "one") == 1.0 and nsd(pred, empty, 2.0, None, "one") == 0.0
    assert np.isnan(nsd(empty, empty, 2.0, None, "nan")) and nsd(empty, empty, 2.0, None, "zero") == 0.0
    assert nsd(empty, gt, 2.0, None, "one") == 0.0  # a missed lesion


def test_one_slice_volume_is_scored_as_an_image():
    """In 3D a lone slice is all surface (its top and bottom faces); the metrics treat it as 2D."""
    pred, gt = square_pair()
    assert nsd(pred[None], gt[None], 0.0, (2.5, 1.0, 1.0), "one") == pytest.approx(18 / 36)
    assert hd95(pred[None], gt[None], (2.5, 2.0, 2.0)) == pytest.approx(hd95(pred, gt, (2.0, 2.0)))


def test_per_case_nsd_uses_the_manifest_spacing():
    """Two slices of one case, each square moved by one row: 1 px is 0.5 mm in case a (NSD at 1 mm is 1)
    and 3 mm in case b; case c has no spacing, so the tolerance is read in pixels."""
    pred, gt = square_pair()
    p, g = np.stack([pred, pred] * 3), np.stack([gt, gt] * 3)
    slices = pd.DataFrame({"slice_id": list("abcdef"), "group": ["a", "a", "b", "b", "c", "c"], "index": [0, 1] * 3,
                           "spacing": ["0.5x0.5x1.0"] * 2 + ["3.0x3.0x1.0"] * 2 + [""] * 2})
    cases = per_case_table(slices, p, g, "one", nsd_tolerance_mm=1.0).set_index("group")
    assert cases.loc["a", "nsd"] == pytest.approx(1.0) and cases.loc["c", "nsd"] == pytest.approx(1.0)
    assert cases.loc["b", "nsd"] < 1.0
    assert cases["nsd_units"].tolist() == ["mm", "mm", "px"]
    assert cases.loc["a", "sensitivity"] == pytest.approx(0.9) and cases.loc["a", "accuracy"] == pytest.approx(880 / 900)
    assert "nsd" not in per_case_table(slices, p, g, "one").columns  # min_area tuning skips the boundary metrics
