"""Stage `train_<model>`: train one of the four models on the balanced train split.

Usage: python -m stages.train MODEL   (MODEL in unet, attn_unet, deeplab, upernet)
       torchrun --nproc_per_node=N -m stages.train MODEL   (DDP on N GPUs; rank 0 logs and writes)
"""
from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np
import torch

from medseg import paths
from medseg.cli import run_stage
from medseg.distributed import cleanup, init_distributed
from medseg.losses import LOSS_PARAMS
from medseg.networks import build_network, load_model_params
from medseg.params import load_section
from medseg.slices import SLICES, dataset_info, load_arrays, read_sampling, split_rows
from medseg.training import RunState, TrainData, train
from models import MODEL_NAMES

log = logging.getLogger("medseg.train")


def load_train_data(channels: int) -> TrainData:
    sampling = read_sampling()
    sampling = sampling[sampling["repeats"] > 0]
    train_images, train_masks = load_arrays(SLICES, sampling["slice_id"].tolist(), channels)
    val_images, val_masks = load_arrays(SLICES, split_rows("val")["slice_id"].tolist(), channels)
    return TrainData(train_images, train_masks, sampling["repeats"].to_numpy(np.int64), val_images, val_masks)


def train_model(name: str, cfg: dict[str, Any], loss_cfg: dict[str, Any], aug_cfg: dict[str, Any],
                model_cfg: dict[str, Any]) -> RunState:
    info = dataset_info()
    channels = info["channels"]
    data = load_train_data(channels)
    torch.manual_seed(cfg["seed"])
    model = build_network(name, channels, model_cfg)
    header = {"model": name, "model_params": model_cfg, "in_channels": channels, "preprocess": info}
    return train(model, name, header, data, cfg, loss_cfg, aug_cfg, paths.model_dir(name), paths.train_log_dir(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", choices=MODEL_NAMES)
    name = parser.parse_args().model
    cfg, loss_cfg = load_section("train"), load_section("loss", schema=LOSS_PARAMS)
    aug_cfg, model_cfg = load_section("augment"), load_model_params(name)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    dist_info = init_distributed(cfg["device"])
    if not dist_info.is_main:  # under torchrun one process reports; the others only warn
        logging.getLogger("medseg").setLevel(logging.WARNING)
    try:
        state = train_model(name, cfg, loss_cfg, aug_cfg, model_cfg)
    finally:
        cleanup()
    if dist_info.is_main:
        log.info("%s: best val Dice %.4f at epoch %d", name, state.best_dice, state.best_epoch)


if __name__ == "__main__":
    run_stage(main)
