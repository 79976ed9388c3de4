"""Stage `balance`: per-slice repeats for the training set -> data/train_sampling.csv + metrics."""
from __future__ import annotations

import argparse
import logging
from medseg import paths, plans
from medseg.cli import run_stage
from medseg.errors import MedsegError
from medseg.outputs import write_atomic, write_json
from medseg.params import BalanceParams
from medseg.sampling import class_statistics, sampling_table
from medseg.slices import dataset_info, split_rows

log = logging.getLogger("medseg.balance")


def main() -> None:
    argparse.ArgumentParser(prog="python -m stages.balance", description=__doc__).parse_args()
    cfg = plans.apply(BalanceParams.load())
    train = split_rows("train")
    if not (train["fg_pixels"] > 0).any():
        raise MedsegError(f"{paths.SPLIT_CSV}: the train split has no slice with foreground (every mask convert "
                          "wrote there is empty; for label volumes, dataset.labels picks the foreground values)")
    table = sampling_table(train, cfg.neg_keep, cfg.pos_repeat, cfg.seed)
    positive_draws = int(table.loc[table["positive"] == 1, "repeats"].sum())
    if positive_draws == 0:  # a small pos_repeat rounds to no draw at all on a small train split
        raise MedsegError(f"params.yaml: balance.pos_repeat={cfg.pos_repeat!r} draws none of the "
                          f"{int(table['positive'].sum())} positive train slices per epoch; raise it")
    size = dataset_info()["size"]
    stats = class_statistics(train, table, size * size)
    write_atomic(paths.SAMPLING_CSV, table.to_csv(index=False))
    write_json(paths.stage_results("balance") / "metrics.json", stats)
    log.info("train slices %d -> %d per epoch (%d positive draws); fg share %.4f -> %.4f",
             stats["slices_before"], stats["slices_after"], stats["positive_after"],
             stats["fg_share_before"], stats["fg_share_after"])


if __name__ == "__main__":
    run_stage(main)
