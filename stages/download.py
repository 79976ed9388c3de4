"""Stage `download`: put the raw dataset under data/raw/<name>/ as it ships.

The default `phantom` is generated here, deterministic by seed, in the MSD NIfTI layout.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from medseg.cli import run_stage
from medseg.datasets.phantom import write_phantom_msd
from medseg.outputs import staged_dir
from medseg.params import load_section

log = logging.getLogger("medseg.download")
RAW = Path("data/raw")


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    cfg = load_section("dataset")
    with staged_dir(RAW) as tmp:
        ph = cfg["phantom"]
        write_phantom_msd(tmp / cfg["name"], ph["cases"], ph["depth"], ph["size"], ph["seed"])
    log.info("wrote %d phantom volumes to %s", ph["cases"], RAW / cfg["name"])


if __name__ == "__main__":
    run_stage(main)
