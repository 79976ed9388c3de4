"""Stage `convert`: raw dataset -> 2D PNG slices in data/slices/ with manifest.csv and info.json."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from medseg.cli import run_stage
from medseg.datasets import format_for
from medseg.outputs import staged_dir, write_json
from medseg.params import load_section
from medseg.slices import MANIFEST_COLUMNS, convert_all

log = logging.getLogger("medseg.convert")
RAW = Path("data/raw")
SLICES = Path("data/slices")


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    dataset = load_section("dataset")
    cfg = load_section("convert")
    raw = RAW / dataset["name"]
    fmt = format_for(dataset["name"])
    cases = fmt.list_cases(raw)
    with staged_dir(SLICES) as tmp:
        manifest = convert_all(fmt.__name__, cases, cfg, raw, tmp)
        channels = int(manifest["channels"].iloc[0])
        manifest[MANIFEST_COLUMNS].to_csv(tmp / "manifest.csv", index=False)
        write_json(tmp / "info.json", {"dataset": dataset["name"], "channels": channels,
                                       "size": cfg["size"]})
    positive = int((manifest["fg_pixels"] > 0).sum())
    log.info("%d cases -> %d slices (%d with foreground) in %s",
             len(cases), len(manifest), positive, SLICES)


if __name__ == "__main__":
    run_stage(main)
