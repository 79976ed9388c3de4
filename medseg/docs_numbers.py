"""Measured numbers in README.md and docs/ generated from the committed results files, so they cannot
go stale: a block between `<!-- generated: NAME -->` and `<!-- /generated -->` is rendered by TABLES[NAME]
from results/ (`python -m medseg.docs_numbers --write`); tests/medseg/test_docs_numbers.py fails when a
block disagrees with what results/ holds now.

Hand-written: a markdown table of a few JSON fields per model (medseg.reporting's) is shorter than a
templating dependency.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg.reporting import md_table
from models import MODEL_NAMES

EVALUATE = Path("results/evaluate")
REALDATA = Path("results/realdata/models.json")
DOCS = (Path("README.md"), Path("docs"))
BLOCK = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- /generated -->)", re.S)


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _ci(m: dict[str, Any], key: str) -> str:
    return f"{m[key]:.3f} [{m[key + '_ci_low']:.3f}, {m[key + '_ci_high']:.3f}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(md_table(header, rows)) + "\n"


def phantom_scores() -> str:
    """The default run's test scores per model (results/evaluate/<model>/metrics.json)."""
    rows = []
    for name in MODEL_NAMES:
        m = _json(EVALUATE / name / "metrics.json")
        rows.append([name, _ci(m, "dice"), _ci(m, "iou"), _ci(m, "dice_fg"), f"{m['fp_case_rate']:.3f}",
                     f"{m['fp_image_rate']:.3f}", f"{m['ap']:.3f}", f"{m['hd95_px']:.3f}", f"{m['case_nsd']:.3f}",
                     f"{m['threshold']:.3f}", str(m["min_area"]), str(m["min_volume"])])
    return _table(["model", "dice [95% CI]", "iou [95% CI]", "dice_fg [95% CI]", "fp_case_rate", "fp_image_rate",
                   "ap", "hd95_px", "case_nsd", "threshold", "min_area", "min_volume"], rows)


def phantom_compute() -> str:
    """What training each model cost in the default run (results/evaluate/<model>/compute.json)."""
    rows = []
    for name in MODEL_NAMES:
        c = _json(EVALUATE / name / "compute.json")
        rows.append([name, f"{c['parameters'] / 1e6:.2f}", f"{c['gflops_per_image']:.2f}", str(c["epochs"]),
                     f"{c['train_seconds']:.0f}", f"{c['train_images_per_s']:.1f}", f"{c['train_peak_memory_mb']:.0f}",
                     f"{c['train_device']}, {c['train_amp']}"])
    return _table(["model", "parameters (M)", "GFLOPs / image", "epochs", "train s", "train img/s",
                   "train peak RSS (MB)", "trained on"], rows)


def phantom_pairs() -> str:
    """The paired comparison of the default run (results/evaluate/comparison.json)."""
    pairs = _json(EVALUATE / "comparison.json")["pairs"]
    rows = [[f"{p['a']} − {p['b']}", f"{p['mean_diff']:+.3f} [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]",
             f"{p['p_holm']:.2g}"] for p in pairs]
    return _table(["pair", "mean per-case Dice difference [95% CI]", "Holm p"], rows)


def lgg_models() -> str:
    """The four models out of fold on the 40 development LGG patients (results/realdata/models.json)."""
    models = _json(REALDATA)["models"]
    rows = [[name, _ci(m, "dice"), str(m["zero_cases"]), f"{m['train_minutes']:.1f}", f"{m['full_set_minutes']:.1f}"]
            for name, m in sorted(models.items())]
    return _table(["model", "OOF per-patient Dice [95% CI]", "patients at 0", "training, 5 folds (min)",
                   "est. training, all 110 patients (min)"], rows)


def dataset_plans() -> str:
    """What each dataset's `auto` params resolve to per profile (medseg/datasets/registry.py's plans)."""
    from medseg.datasets.registry import DATASET_PLANS
    from medseg.plans import PROFILES, REAL_FRACTIONS

    rows = []
    for name, plan in DATASET_PLANS.items():
        if name.startswith("phantom_"):
            continue
        fractions = "/".join(f"{v:g}" for v in (plan.fractions or REAL_FRACTIONS).values())
        per = {p: [str(plan.size[p]), fractions, *(f"{getattr(plan, k)[p]:g}" for k in
                                                   ("neg_keep", "pos_repeat", "epochs", "patience", "batch_size")),
                   plan.select[p]] for p in PROFILES}
        label = "`phantom` (and `phantom_*`)" if name == "phantom" else f"`{name}`"
        if per["cpu"] == per["gpu"]:
            rows.append([label, "cpu, gpu", *per["cpu"]])
        else:
            rows += [[label, p, *per[p]] for p in PROFILES]
    return _table(["dataset.name", "profile", "convert.size", "split.fractions (train/val/test)", "balance.neg_keep",
                   "balance.pos_repeat", "train.epochs", "train.patience", "train.batch_size", "train.select"], rows)


TABLES: dict[str, Callable[[], str]] = {f.__name__: f for f in (phantom_scores, phantom_compute, phantom_pairs,
                                                                 lgg_models, dataset_plans)}


def rendered(text: str, where: Path) -> str:
    """`text` with every generated block re-rendered from results/; an unknown block name is an error."""
    def fill(match: re.Match) -> str:
        name = match.group(2)
        if name not in TABLES:
            raise SystemExit(f"error: {where}: unknown generated block {name!r}; known: {', '.join(TABLES)}")
        return match.group(1) + TABLES[name]() + match.group(4)
    return BLOCK.sub(fill, text)


def documents() -> list[Path]:
    return [p for root in DOCS for p in ([root] if root.is_file() else sorted(root.rglob("*.md")))]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m medseg.docs_numbers", description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the stale blocks (default: list them, exit 1)")
    write = parser.parse_args().write
    stale = []
    for path in documents():
        text = path.read_text()
        if (new := rendered(text, path)) != text:
            stale.append(path)
            if write:
                path.write_text(new)
    for path in stale:
        print(f"{path}: {'rewritten' if write else 'numbers differ from results/; run python -m medseg.docs_numbers --write'}")
    sys.exit(1 if stale and not write else 0)


if __name__ == "__main__":
    main()
