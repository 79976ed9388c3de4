"""Stage `download`: put the raw dataset under data/raw/<name>/ as it ships.

Phantom datasets (`phantom`, `phantom_<format>`) are generated here, deterministic by seed, in the
raw layout of the format they mimic; real datasets come from Kaggle or a local folder.
"""
from __future__ import annotations

import argparse
import logging
from medseg import paths
from medseg.cli import run_stage
from medseg.datasets.registry import DatasetParams, format_for, phantom_writer
from medseg.outputs import staged_dir

log = logging.getLogger("medseg.download")


def main() -> None:
    argparse.ArgumentParser(prog="python -m stages.download", description=__doc__).parse_args()
    cfg = DatasetParams.load()
    format_for(cfg.name)  # rejects unknown names before anything is written
    writer = phantom_writer(cfg.name)
    with staged_dir(paths.RAW) as tmp:
        target = tmp / cfg.name
        if writer is not None:
            ph = cfg.phantom
            target.mkdir()
            writer.write(target, ph["cases"], ph["depth"], ph["size"], ph["seed"])
            log.info("wrote %d phantom cases (%s) to %s", ph["cases"], cfg.name, paths.raw_dir(cfg.name))
        else:
            from medseg.fetch import fetch_dataset

            fetch_dataset(cfg.name, cfg.source, target)
            log.info("%s is in %s", cfg.name, paths.raw_dir(cfg.name))


if __name__ == "__main__":
    run_stage(main)
