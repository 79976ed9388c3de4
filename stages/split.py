"""Stage `split`: whole patients/volumes into train/val/test -> data/split.csv; with
`split.folds` K >= 2, train and val are pooled into K cross-validation folds (a `fold` column)."""
from __future__ import annotations

import argparse
import logging
from medseg import paths, plans
from medseg.cli import run_stage
from medseg.outputs import write_atomic
from medseg.params import SplitParams
from medseg.slices import read_manifest
from medseg.splitting import assign_folds, split_groups

log = logging.getLogger("medseg.split")
MIN_GROUPS = 5  # a split (or fold) with fewer patients/volumes gives a score one case can swing


def main() -> None:
    argparse.ArgumentParser(prog="python -m stages.split", description=__doc__).parse_args()
    cfg = plans.apply(SplitParams.load())  # planned fractions checked against split.folds, as explicit ones
    manifest = read_manifest()
    split = split_groups(manifest, cfg.fractions, cfg.seed)
    if cfg.folds > 1:
        split = assign_folds(manifest, split, cfg.folds, cfg.seed)
    write_atomic(paths.SPLIT_CSV, split.to_csv(index=False))
    label = split["fold"].map(lambda k: "test" if k < 0 else f"fold {k}") if "fold" in split else split["split"]
    for name, part in split.groupby(label):
        groups = part["group"].nunique()
        log.info("%s: %d groups, %d slices", name, groups, len(part))
        if groups < MIN_GROUPS:
            log.warning("%s holds %d group(s), fewer than %d: its scores (and any CI or test on them) will not mean "
                        "much; add cases, or pool train and val into split.folds", name, groups, MIN_GROUPS)


if __name__ == "__main__":
    run_stage(main)
