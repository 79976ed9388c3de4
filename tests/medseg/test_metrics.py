"""Our metric definitions against independent computations (scikit-learn, SciPy, brute force)."""
import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from medseg.evaluation import per_case_table, per_image_table
from medseg.metrics import best_f1_threshold, global_dice, hd95, overlap_scores, pixel_pr


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
    cases = per_case_table(slices, p, g, "one").set_index("group")
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
