"""Tiny untrained models saved as training saves them, for the predict and export tests.

save_tiny       one best.pt of a network at test width, its head rescaled so that the logits of a random
                image have mean 0 and sd 1: probabilities spread over (0, 1) as a trained model's do
                (untrained, they sit within 0.01 of the 1 % prior and every mask would be empty)
kfold_folder    a k-fold model folder: fold_<k>/best.pt (one seed per fold) and ensemble.json
safe_threshold  a threshold inside the widest gap between the central probabilities, so that masks
                compared at it do not hinge on rounding
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medseg.model_card import Threshold, save_checkpoint, write_ensemble
from torch import nn

from models import build_model

TINY = {"unet": {"width": 4}, "attn_unet": {"width": 4},
        "deeplab": {"encoder": "resnet18", "decoder_channels": 8, "pretrained": False},
        "upernet": {"encoder": "resnet18", "decoder_channels": 8, "pretrained": False}}
PRE = {"size": 48, "channels": 1, "window_level": -600, "window_width": 1500, "dataset": "phantom"}


@torch.no_grad()
def standardise_head(model: nn.Module) -> None:
    """Rescale the last 1-channel convolution to run (the output head: what follows it is linear)."""
    ran: list[nn.Conv2d] = []
    hooks = [m.register_forward_hook(lambda m, *_: ran.append(m)) for m in model.modules()
             if isinstance(m, nn.Conv2d) and m.out_channels == 1]
    logits = model.eval()(torch.rand(4, PRE["channels"], PRE["size"], PRE["size"]))
    for hook in hooks:
        hook.remove()
    head, mean, sd = ran[-1], logits.mean(), logits.std()
    head.weight /= sd
    head.bias.sub_(mean).div_(sd)


def save_tiny(path: Path, name: str = "unet", seed: int = 0, threshold: float = 0.5) -> Path:
    torch.manual_seed(seed)
    model = build_model(name, PRE["channels"], **TINY[name])
    standardise_head(model)
    save_checkpoint(path, {"model": name, "model_params": TINY[name], "in_channels": PRE["channels"],
                           "state_dict": model.state_dict(), "preprocess": PRE, "threshold": threshold,
                           "threshold_source": "test"})
    return path


def kfold_folder(root: Path, folds: int = 3, name: str = "unet", threshold: float = 0.42) -> Path:
    for k in range(folds):
        save_tiny(root / f"fold_{k}" / "best.pt", name, seed=k, threshold=0.9)  # the fold's own: not the ensemble's
    write_ensemble(root, folds, Threshold(threshold, "test: out-of-fold best F1", True))
    return root


def safe_threshold(probs: np.ndarray) -> float:
    values = np.unique(probs)
    lo, hi = np.searchsorted(values, np.quantile(probs, [0.3, 0.7]))
    k = lo + int(np.argmax(np.diff(values[lo: hi + 1])))
    return float((values[k] + values[k + 1]) / 2)
