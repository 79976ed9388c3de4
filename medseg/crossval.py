"""The cross-validation estimate of a k-fold model: every non-test case scored by the fold model
that never saw it, pooled (mean per-case Dice with its bootstrap CI) and per fold (mean ± sd)."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from medseg.uncertainty import mean_ci


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


