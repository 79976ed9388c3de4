"""The cross-validation estimate of a k-fold model: every non-test case scored by the fold model
that never saw it, pooled (mean per-case Dice with its bootstrap CI) and per fold (mean ± sd)."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from medseg.evaluation import comparison_table, with_ci
from medseg.uncertainty import comparison_sentence, mean_ci


def cv_metrics(cases: pd.DataFrame, resamples: int, seed: int) -> dict[str, Any]:
    """`cases` is the out-of-fold per-case table with its `fold` column."""
    low, high = mean_ci(cases["dice"], resamples, seed)
    per_fold = cases.groupby("fold")["dice"].mean()
    fg = cases[cases["gt_voxels"] > 0]
    return {"folds": int(len(per_fold)), "cases": int(len(cases)), "dice": _float(cases["dice"].mean()),
            "dice_ci_low": low, "dice_ci_high": high, "dice_fg": _float(fg["dice"].mean()),
            "fold_dice_mean": _float(per_fold.mean()),
            "fold_dice_sd": _float(per_fold.std(ddof=1)) if len(per_fold) > 1 else None,
            "fold_dice": {f"fold_{k}": _float(v) for k, v in per_fold.items()}}


def _float(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def cv_markdown(metrics: dict[str, dict[str, Any]], pairs: list[dict[str, Any]]) -> str:
    """The summary.md section: the CV estimate of every model next to its ensemble's test score,
    and the paired comparison over the out-of-fold cases."""
    rows = []
    for name, m in metrics.items():
        cv = m["cv"]
        sd = "n/a" if cv["fold_dice_sd"] is None else f"{cv['fold_dice_sd']:.3f}"
        mean = "n/a" if cv["fold_dice_mean"] is None else f"{cv['fold_dice_mean']:.3f}"
        rows.append(f"| {name} | {with_ci(cv, 'dice')} | {mean} ± {sd} | {with_ci(m, 'dice')} |")
    first = next(iter(metrics.values()))["cv"]
    return "\n".join([
        "## Cross-validation", "",
        f"{first['folds']} patient-level folds; {first['cases']} out-of-fold cases, each scored by the fold "
        "model that did not train on it; the threshold and min_area were chosen on these same predictions. "
        "The test column is the fold ensemble (mean of the fold probabilities) on the held-out test cases.", "",
        "| model | CV per-case Dice [95% CI] | mean ± sd over folds | test Dice of the ensemble [95% CI] |",
        "|---|---|---|---|", *rows, "",
        "### Paired comparison over the out-of-fold cases", "", *comparison_table(pairs), "",
        comparison_sentence(pairs), ""])
