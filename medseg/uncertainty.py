"""How sure a headline number is, and whether two models really differ: bootstrap confidence
intervals over test cases and paired tests over the same cases (scipy.stats), as Metrics
Reloaded and nnU-Net Revisited ask of any comparison.

Hand-written: Holm's step-down correction (six lines; scipy ships only Benjamini-Hochberg and
statsmodels would be a dependency for one function).
"""
from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
ALPHA = 0.05
# Below this many cases a bootstrap CI and a signed-rank test say nothing worth printing as evidence:
# with 5 cases the smallest two-sided Wilcoxon p is 0.0625, and a bootstrap over 4 values has a handful of means
MIN_CASES = 10


def mean_ci(values: Any, resamples: int, seed: int) -> tuple[float | None, float | None]:
    """Percentile-bootstrap 95% CI of the mean of `values` (NaN left out); (v, v) for one value,
    (None, None) for none. Percentile rather than BCa: BCa is undefined on the all-equal samples
    (every lesion-free case scored 1) that small phantom test sets produce."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return None, None
    if x.size == 1 or np.all(x == x[0]):
        return float(x[0]), float(x[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap((x,), np.mean, n_resamples=resamples, confidence_level=LEVEL,
                              method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN stays NaN."""
    p = np.asarray(pvalues, dtype=float)
    order = [i for i in np.argsort(p) if not math.isnan(p[i])]
    adjusted, running = np.full(len(p), math.nan), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences; 1.0 when every difference is
    0 (the same predictions on every case), NaN without cases."""
    if differences.size == 0:
        return math.nan
    if np.all(differences == 0):
        return 1.0
    return float(stats.wilcoxon(differences, zero_method="wilcox").pvalue)


def favoured(differences: np.ndarray) -> int:
    """+1 when the signed ranks (what Wilcoxon tests) favour the first model, -1 the second, 0 for
    neither. Not the sign of the mean: one lesion-free case scored 0 against 1 can flip a mean
    while most cases go the other way."""
    nonzero = differences[differences != 0]
    if nonzero.size == 0:
        return 0
    return int(np.sign(np.sum(np.sign(nonzero) * stats.rankdata(np.abs(nonzero)))))


def paired_comparison(per_case: dict[str, pd.DataFrame], metric: str, resamples: int,
                      seed: int) -> list[dict[str, Any]]:
    """Every pair of models on the cases both scored: mean difference (a - b) of `metric`, its
    paired-bootstrap 95% CI, the Wilcoxon p-value and its Holm correction over the pairs."""
    rows = []
    for a, b in itertools.combinations(per_case, 2):
        both = per_case[a][["group", metric]].merge(per_case[b][["group", metric]], on="group",
                                                    suffixes=("_a", "_b")).dropna()
        diff = (both[f"{metric}_a"] - both[f"{metric}_b"]).to_numpy()
        low, high = mean_ci(diff, resamples, seed)
        rows.append({"a": a, "b": b, "metric": metric, "cases": int(len(diff)),
                     "mean_diff": float(diff.mean()) if len(diff) else None,
                     "median_diff": float(np.median(diff)) if len(diff) else None,
                     "ci_low": low, "ci_high": high, "p_wilcoxon": wilcoxon_p(diff),
                     "favours": {1: a, -1: b, 0: None}[favoured(diff)]})
    for row, adjusted in zip(rows, holm([r["p_wilcoxon"] for r in rows])):
        row["p_holm"] = None if math.isnan(adjusted) else adjusted
        row["p_wilcoxon"] = None if math.isnan(row["p_wilcoxon"]) else row["p_wilcoxon"]
        row["significant"] = row["p_holm"] is not None and row["p_holm"] < ALPHA and row["cases"] >= MIN_CASES
    return rows


