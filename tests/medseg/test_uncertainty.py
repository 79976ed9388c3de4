"""medseg.uncertainty: bootstrap CIs and paired tests, on numbers whose answer is known."""
import numpy as np
import pandas as pd
import pytest

from medseg.reporting import comparison_sentence
from medseg.uncertainty import holm, mean_ci, paired_comparison, wilcoxon_p


def brute_force_ci(x: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """The percentile bootstrap written out: resample cases with replacement, take the mean."""
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (resamples, len(x)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def test_ci_matches_a_brute_force_bootstrap():
    x = np.random.default_rng(3).beta(8, 2, size=30)  # per-case Dice-like values
    low, high = mean_ci(x, 20_000, 0)
    b_low, b_high = brute_force_ci(x, 20_000, 1)
    assert low < x.mean() < high
    assert low == pytest.approx(b_low, abs=0.005) and high == pytest.approx(b_high, abs=0.005)


def test_ci_of_a_normal_sample_is_mean_plus_minus_1_96_se():
    x = np.random.default_rng(0).normal(0.8, 0.1, size=400)
    low, high = mean_ci(x, 10_000, 0)
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert (high - low) / 2 == pytest.approx(1.96 * se, rel=0.08)
    assert (low + high) / 2 == pytest.approx(x.mean(), abs=0.2 * se)


def test_ci_is_seeded_and_handles_degenerate_samples():
    x = np.array([0.9, 0.7, 1.0, 0.0, 0.85, 0.95])
    assert mean_ci(x, 5_000, 7) == mean_ci(x, 5_000, 7)
    assert mean_ci(x, 5_000, 7) != mean_ci(x, 5_000, 8)
    assert mean_ci([1.0, 1.0, 1.0], 5_000, 0) == (1.0, 1.0)  # every lesion-free case right
    assert mean_ci([np.nan, 0.5], 5_000, 0) == (0.5, 0.5)  # NaN (empty rule `nan`) left out
    assert mean_ci([], 5_000, 0) == (None, None)


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # step-down, kept monotone
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm([0.02, float("nan")])
    assert adjusted[0] == pytest.approx(0.02) and np.isnan(adjusted[1])


def tables(**dice: np.ndarray) -> dict[str, pd.DataFrame]:
    return {name: pd.DataFrame({"group": [f"c{i:02d}" for i in range(len(v))], "dice": v}) for name, v in dice.items()}


def test_identical_models_do_not_differ():
    d = np.random.default_rng(1).uniform(0.5, 1.0, 25)
    rows = paired_comparison(tables(a=d, b=d.copy()), "dice", 2_000, 0)
    assert rows[0]["mean_diff"] == 0 and rows[0]["p_wilcoxon"] == 1.0 and not rows[0]["significant"]
    assert "No pair of models differs significantly" in comparison_sentence(rows)


def test_a_model_better_on_every_case_is_significant_with_the_right_sign():
    rng = np.random.default_rng(2)
    b = rng.uniform(0.5, 0.8, 20)
    a = b + rng.uniform(0.05, 0.15, 20)
    c = b + rng.normal(0, 0.01, 20)  # indistinguishable from b
    rows = {(r["a"], r["b"]): r for r in paired_comparison(tables(a=a, b=b, c=c), "dice", 4_000, 0)}
    ab = rows[("a", "b")]
    assert ab["significant"] and ab["mean_diff"] == pytest.approx((a - b).mean())
    assert 0 < ab["ci_low"] < ab["mean_diff"] < ab["ci_high"]
    assert ab["p_wilcoxon"] < 1e-4 and ab["p_wilcoxon"] <= ab["p_holm"] <= 3 * ab["p_wilcoxon"]
    assert rows[("a", "c")]["significant"] and rows[("a", "c")]["mean_diff"] > 0
    assert not rows[("b", "c")]["significant"]
    sentence = comparison_sentence(list(rows.values()))
    assert "a ranks above b" in sentence and "a ranks above c" in sentence and "includes 0" not in sentence


def test_the_winner_follows_the_ranks_and_a_deciding_case_is_called_out():
    """Most cases favour a, one lesion-free case scored 0 for a (1 for b) flips the mean."""
    rng = np.random.default_rng(4)
    b = rng.uniform(0.6, 0.9, 30)
    a = b + rng.uniform(0.01, 0.03, 30)
    a[0], b[0] = 0.0, 1.0
    row = paired_comparison(tables(a=a, b=b), "dice", 4_000, 0)[0]
    assert row["mean_diff"] < 0 < row["median_diff"] and row["favours"] == "a" and row["significant"]
    sentence = comparison_sentence([row])
    assert "a ranks above b" in sentence and "includes 0 or the other sign" in sentence


def test_pairs_use_only_cases_both_models_scored():
    a = pd.DataFrame({"group": ["x", "y", "z"], "dice": [0.9, np.nan, 0.8]})
    b = pd.DataFrame({"group": ["z", "x", "y"], "dice": [0.6, 0.7, 0.5]})
    row = paired_comparison({"a": a, "b": b}, "dice", 2_000, 0)[0]
    assert row["cases"] == 2 and row["mean_diff"] == pytest.approx(0.2)
    assert np.isnan(wilcoxon_p(np.array([])))


def test_too_few_cases_are_never_called_different():
    """Four cases where a wins every one: the Wilcoxon p cannot go below 0.125, and the words say why it
    is not evidence (issue 28: statistics on nothing)."""
    rows = paired_comparison(tables(a=np.array([0.9, 0.8, 0.85, 0.95]), b=np.array([0.1, 0.2, 0.15, 0.05])),
                             "dice", 2_000, 0)
    assert not rows[0]["significant"] and rows[0]["cases"] == 4
    assert comparison_sentence(rows).startswith("Only 4 paired cases (fewer than 10): the CIs and tests above are "
                                                "not meaningful")
