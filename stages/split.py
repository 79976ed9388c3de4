"""Stage `split`: whole patients/volumes into train/val/test -> data/split.csv."""
from __future__ import annotations

import argparse
import logging
from medseg import paths
from medseg.cli import run_stage
from medseg.outputs import write_atomic
from medseg.params import load_section
from medseg.slices import read_manifest
from medseg.splitting import SPLITS, split_groups

log = logging.getLogger("medseg.split")


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    cfg = load_section("split")
    manifest = read_manifest()
    split = split_groups(manifest, cfg["fractions"], cfg["seed"])
    write_atomic(paths.SPLIT_CSV, split.to_csv(index=False))
    for name in SPLITS:
        part = split[split["split"] == name]
        log.info("%s: %d groups, %d slices", name, part["group"].nunique(), len(part))


if __name__ == "__main__":
    run_stage(main)
