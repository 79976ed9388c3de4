"""Stage `train_<model>`: train one of the four models on the balanced train split, or, when
data/split.csv has K cross-validation folds, K fold models (fold k validates on fold k) and
ensemble.json with the threshold chosen on their out-of-fold predictions.

Usage: python -m stages.train MODEL   (MODEL in unet, attn_unet, deeplab, upernet)
       torchrun --nproc_per_node=N -m stages.train MODEL   (DDP on N GPUs; rank 0 logs and writes)
With `train.processes: N` > 1 the stage starts that torchrun itself, so `dvc repro` runs DDP.
"""
from __future__ import annotations

import argparse
import logging

import torch

from medseg import plans
from medseg.cli import run_stage
from medseg.distributed import cleanup, init_distributed, launched_by_torchrun, run_under_torchrun
from medseg.losses import LossParams
from medseg.model_runs import train_model
from medseg.networks import load_model_params
from medseg.params import AugmentParams, TrainParams
from models import MODEL_NAMES

log = logging.getLogger("medseg.train")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.train", description=__doc__)
    parser.add_argument("model", choices=MODEL_NAMES)
    name = parser.parse_args().model
    cfg, loss_cfg = TrainParams.load(), LossParams.load()
    aug_cfg, model_cfg = AugmentParams.load(), load_model_params(name)
    cfg = plans.apply(cfg)  # after every params check: a bad value is named before the data is read
    if cfg.processes > 1 and not launched_by_torchrun():
        run_under_torchrun("stages.train", [name], cfg.processes, cfg.device)
        return
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    dist_info = init_distributed(cfg.device)
    if not dist_info.is_main:  # under torchrun one process reports; the others only warn
        logging.getLogger("medseg").setLevel(logging.WARNING)
    try:
        states = train_model(name, cfg, loss_cfg, aug_cfg, model_cfg, dist_info.is_main)
    finally:
        cleanup()
    if dist_info.is_main:
        for fold, state in enumerate(states):
            which = f" fold {fold}" if len(states) > 1 else ""
            log.info("%s%s: best val Dice %.4f at epoch %d", name, which, state.best_dice, state.best_epoch)


if __name__ == "__main__":
    run_stage(main)
