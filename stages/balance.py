"""Stage `balance`: per-slice repeats for the training set -> data/train_sampling.csv + metrics."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from medseg.cli import run_stage
from medseg.errors import MedsegError
from medseg.outputs import write_atomic, write_json
from medseg.params import load_section
from medseg.sampling import class_statistics, sampling_table
from medseg.slices import dataset_info, read_manifest

log = logging.getLogger("medseg.balance")


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    cfg = load_section("balance")
    slices = Path("data/slices")
    manifest = read_manifest(slices)
    split = pd.read_csv("data/split.csv", dtype={"slice_id": str, "group": str})
    train = manifest[manifest["slice_id"].isin(split.loc[split["split"] == "train", "slice_id"])]
    if not (train["fg_pixels"] > 0).any():
        raise MedsegError("data/split.csv: the train split has no slice with foreground")
    table = sampling_table(train.reset_index(drop=True), cfg["neg_keep"], cfg["pos_repeat"], cfg["seed"])
    size = dataset_info(slices)["size"]
    stats = class_statistics(train, table, size * size)
    write_atomic(Path("data/train_sampling.csv"), table.to_csv(index=False))
    write_json(Path("results/balance/metrics.json"), stats)
    log.info("train slices %d -> %d per epoch (%d positive draws); fg share %.4f -> %.4f",
             stats["slices_before"], stats["slices_after"], stats["positive_after"],
             stats["fg_share_before"], stats["fg_share_after"])


if __name__ == "__main__":
    run_stage(main)
