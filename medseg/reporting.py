"""The markdown medseg writes (summary.md's sections: scores with CIs, paired comparisons in numbers and in
words, per-class scores, the cross-validation estimate, the plan), in one place: the modules that compute
scores and statistics return numbers, and this module words them.

Hand-written: a handful of small tables, where pandas' to_markdown would add the tabulate dependency
and its own number formatting.
"""
from __future__ import annotations

from typing import Any

from medseg.metrics import EMPTY_RULES
from medseg.uncertainty import ALPHA, MIN_CASES

def fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def with_ci(m: dict[str, Any], key: str) -> str:
    """'0.912 [0.851, 0.953]' for metric `key` of a model ('0.912' where no CI was computed)."""
    if m.get(key) is None:
        return "n/a"
    if f"{key}_ci_low" not in m:
        return f"{m[key]:.3f}"
    return f"{m[key]:.3f} [{fmt(m.get(key + '_ci_low'))}, {fmt(m.get(key + '_ci_high'))}]"


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


def comparison_table(pairs: list[dict[str, Any]]) -> list[str]:
    rows = [[f"{p['a']} − {p['b']}", str(p["cases"]),
             f"{fmt(p['mean_diff'])} [{fmt(p['ci_low'])}, {fmt(p['ci_high'])}]",
             "n/a" if p["p_wilcoxon"] is None else f"{p['p_wilcoxon']:.3g}",
             fmt(p["median_diff"]), p["favours"] or "neither",
             "n/a" if p["p_holm"] is None else f"{p['p_holm']:.3g}", "yes" if p["significant"] else "no"]
            for p in pairs]
    return md_table(["pair (a − b)", "cases", "mean Dice difference [95% CI]", "Wilcoxon p", "median difference",
                   "ranks favour", "Holm p", "significant at 0.05"], rows)


def summary_markdown(metrics: dict[str, dict[str, Any]], empty: str, pairs: list[dict[str, Any]],
                     costs: dict[str, dict[str, Any]]) -> str:
    """Every model's scores with their CIs, the paired comparisons in numbers and in words, what
    each model cost, and the metric definitions with the empty-mask rule."""
    first = next(iter(metrics.values()), {})
    several = "classes" in first  # the macro mean over classes: its per-class detail is in the Per class section
    plain = ["ap"] if several else [
        "fp_case_rate", "fp_image_rate", "ap", "hd95_px", "case_nsd", "case_sensitivity", "image_dice",
        "global_dice", "siim_dice", "isic_jaccard", "threshold", "min_area", "min_volume", "largest_volume"]
    rows = [[name, with_ci(m, "dice"), with_ci(m, "iou"), with_ci(m, "dice_fg"), *(fmt(m.get(c)) for c in plain)]
            for name, m in metrics.items()]
    cases = (f"{first.get('cases')} test cases, scored per class ({', '.join(first['classes'])}; "
             f"{first.get('class_mode')}) and as the macro mean over the classes per case" if several else
             f"{first.get('cases')} test cases ({first.get('fg_cases')} with foreground, "
             f"{first.get('empty_cases')} lesion-free)")
    if (first.get("cases") or 0) < MIN_CASES:
        cases += (f". **Fewer than {MIN_CASES} test cases: every CI and test below is too wide or too weak to mean "
                  "anything; read these scores as a check that the pipeline runs, not as a result**")
    notes = [f"- `{k}`: {v}" for k, v in METRIC_NOTES.items()]
    return "\n".join(["# Test-split results", "", f"{cases}; `evaluate.empty: {empty}`.", "",
                      *md_table(["model", "dice [95% CI]", "iou [95% CI]", "dice_fg [95% CI]", *plain], rows), "",
                      "## Paired comparison (per-case Dice on the same test cases)", "",
                      *comparison_table(pairs), "", comparison_sentence(pairs), "",
                      "## Compute", "", *cost_table(costs), "",
                      f"Empty ground truth rule (`evaluate.empty: {empty}`): {EMPTY_RULES[empty]}.", "",
                      *notes, ""])


def evaluate_summary(metrics: dict[str, dict[str, Any]], empty: str, report: dict[str, Any],
                     costs: dict[str, dict[str, Any]]) -> str:
    """summary.md without its plan: the scores and paired comparisons, per class where there are several
    classes, and the cross-validation estimate with K folds (report: comparison.json's content)."""
    text = summary_markdown(metrics, empty, report["pairs"], costs)
    if "classes" in report:
        text += "\n" + classes_markdown(metrics, report["classes"])
    if "oof_pairs" in report:
        text += "\n" + cv_markdown(metrics, report["oof_pairs"])
    return text


def comparison_sentence(rows: list[dict[str, Any]]) -> str:
    """What the paired tests say, in words."""
    found = [r for r in rows if r["significant"]]
    if not rows:
        return "There is only one model: nothing to compare."
    fewest = min(r["cases"] for r in rows)
    if fewest < MIN_CASES:
        return (f"Only {fewest} paired cases (fewer than {MIN_CASES}): the CIs and tests above are not meaningful at "
                "this size, and no pair of models is called different.")
    if not found:
        return (f"No pair of models differs significantly in per-case {rows[0]['metric']} at {ALPHA} "
                f"(Wilcoxon signed-rank, Holm-corrected over {len(rows)} pairs): on these test cases the "
                "models cannot be told apart.")
    said = [_one_finding(r) for r in found]
    return (f"Significant at {ALPHA} (Wilcoxon signed-rank, Holm-corrected over {len(rows)} pairs): "
            + "; ".join(said) + ". No other pair differs significantly.")


def classes_markdown(metrics: dict[str, dict[str, Any]], pairs: dict[str, list[dict[str, Any]]]) -> str:
    """summary.md's per-class section: each model's scores per class with CIs, and the paired tests per class."""
    rows = [[model, c, with_ci(m, "dice"), with_ci(m, "dice_fg"), fmt(m.get("ap")), fmt(m.get("hd95_px")),
             fmt(m.get("case_nsd")), fmt(m.get("threshold")), fmt(m.get("min_area")), fmt(m.get("min_volume")),
             fmt(m.get("largest_volume"))]
            for model, macro in metrics.items() for c, m in macro["classes"].items()]
    lines = ["## Per class", "",
             "The headline `dice` above is, per case, the mean over the classes (background excluded) of the "
             "class Dice; each class below is scored as its own binary problem under the same empty rule, with "
             "its post-processing chosen on val.", "",
             *md_table(["model", "class", "dice [95% CI]", "dice_fg [95% CI]", "ap", "hd95_px", "case_nsd", "threshold",
                      "min_area", "min_volume", "largest_volume"], rows), ""]
    for c, class_pairs in pairs.items():
        lines += [f"### Paired comparison on {c} (per-case Dice)", "", *comparison_table(class_pairs), "",
                  comparison_sentence(class_pairs), ""]
    return "\n".join(lines)


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


def plan_markdown(plan: dict[str, Any]) -> str:
    """The summary.md section: the profile, the fingerprint, and each planned value with its reason."""
    lines = ["## Plan", "",
             f"Dataset `{plan['dataset']}`, profile `{plan['profile']}` ({plan['profile_why']}); written by `convert` "
             "to data/slices/plans.json. Fingerprint: "
             + ", ".join(f"{k} {v}" for k, v in plan["fingerprint"].items()) + ".", "",
             "A param set explicitly in params.yaml (not `auto`) overrides its planned value; the epochs that ran are "
             "in the Compute table.", "", "| param | planned | why |", "|---|---|---|"]
    for key, entry in plan["values"].items():
        lines.append(f"| `{key}` | {entry['value']} | {entry['why']} |")
    return "\n".join(lines) + "\n"


METRIC_NOTES = {
    "dice [95% CI]": "mean over test cases of the 3D Dice of the re-stacked volume, with its percentile-bootstrap 95% CI over cases",
    "iou [95% CI]": "mean over test cases of the 3D IoU, with its CI",
    "dice_fg [95% CI]": "mean per-case Dice over the test cases that hold foreground: segmentation quality alone",
    "fp_case_rate, fp_image_rate": "share of lesion-free test cases / images with any predicted foreground: detection of absent targets",
    "ap": "pixel average precision (scikit-learn) over a uniform pixel subsample",
    "hd95": "mean over cases of the 95th-percentile Hausdorff distance (MONAI); cases with an empty side left out",
    "case_nsd": "mean over cases of the normalised surface Dice (MONAI): the share of both 3D boundaries within "
                "`evaluate.nsd_tolerance_mm` of the other (in pixels where no spacing is recorded); an empty "
                "truth follows the empty rule, an empty prediction of a lesion scores 0",
    "case_sensitivity, case_specificity": "mean over cases of TP / (TP + FN) (= recall) and TN / (TN + FP) of the "
                                          "volume; an empty truth follows the empty rule; `case_accuracy` and the "
                                          "`image_` versions (per slice) in metrics.json",
    "image_dice": "mean per-image Dice",
    "global_dice": "Dice of all test pixels pooled",
    "siim_dice": "SIIM-ACR challenge metric: mean per-image Dice, an empty truth scoring 1 only when predicted empty",
    "isic_jaccard": "ISIC 2018 Task 1 metric: mean per-image Jaccard, values below 0.65 counted as 0",
    "threshold, min_area": "probability cut-off (best pixel F1 on val, from best.pt) and smallest kept connected component (pixels, chosen on val when `auto`)",
    "min_volume, largest_volume": "post-processing of each case's re-stacked volume after min_area: smallest kept 3D "
                                  "connected component (voxels) and whether only the largest is kept, chosen on val "
                                  "(out-of-fold predictions with folds) when `auto`",
}



def cost_table(costs: dict[str, dict[str, Any]]) -> list[str]:
    number = lambda v, f: "n/a" if v is None else format(v, f)  # noqa: E731
    rows = [[name, number(c["parameters"] / 1e6, ".2f"), number(c["gflops_per_image"], ".2f"), fmt(c["epochs"]),
             number(c["train_seconds"], ".0f"), number(c["train_images_per_s"], ".1f"),
             number(c["train_peak_memory_mb"], ".0f"), f"{c['train_device']} ({c['train_amp']})"]
            for name, c in costs.items()]
    size = next(iter(costs.values()))["image_size"] if costs else "?"
    return md_table(["model", "parameters (M)", f"GFLOPs / image at {size} px", "epochs", "train s",
                   "train img/s", "train peak memory (MB)", "trained on (autocast)"], rows)



def _one_finding(r: dict[str, Any]) -> str:
    """'unet ranks above deeplab (Holm p = 0.001; mean difference 0.089 [0.024, 0.139])', with a
    warning when the mean difference's CI does not agree with the rank test."""
    winner = r["favours"]
    loser = r["b"] if winner == r["a"] else r["a"]
    sign = 1 if winner == r["a"] else -1
    diff, low, high = (sign * v for v in (r["mean_diff"], r["ci_low"], r["ci_high"]))
    low, high = min(low, high), max(low, high)
    text = (f"{winner} ranks above {loser} (Holm p = {r['p_holm']:.3g}; mean difference {diff:.3f} "
            f"[{low:.3f}, {high:.3f}]")
    if low <= 0:
        text += ", a CI that includes 0 or the other sign: a few cases, such as a lesion-free case scored 0, decide the mean"
    return text + ")"

