"""The trained PyTorch networks behind a `--model` path (one best.pt, or a k-fold model folder whose
fold_<k>/best.pt probabilities are averaged), with the model card they were written with.

The one loader of evaluate, visualize, predict (PyTorch path) and export, so all read the two layouts
the same way; what the files hold is medseg.model_card's.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.classes import of_preprocess
from medseg.errors import MedsegError, first_line
from medseg.folds import mean_probs
from medseg.inference import predict_class_probs, predict_probs
from medseg.model_card import ModelCard, read_card
from medseg.networks import build_network
from medseg.tta import with_tta


@dataclass
class TrainedModel:
    """Networks (one per fold, in eval mode) and the card they were loaded from."""

    members: list[nn.Module]
    card: ModelCard

    def to(self, device: torch.device) -> TrainedModel:
        self.members = [m.to(device) for m in self.members]
        return self

    def probs(self, images: np.ndarray, device: torch.device, tta: bool = False, batch_size: int | None = None,
              amp_dtype: torch.dtype | None = None) -> np.ndarray:
        """(N, H, W, C) uint8 -> (N, H, W) float32: the mean of the folds' sigmoid probabilities,
        one batch (default: the training batch) on the device at a time."""
        batch = batch_size or self.card.batch_size
        return mean_probs(predict_probs(m, images, device, batch, amp_dtype, tta) for m in self.members)

    def class_probs(self, images: np.ndarray, device: torch.device, tta: bool = False,
                    batch_size: int | None = None, amp_dtype: torch.dtype | None = None) -> np.ndarray:
        """A multi-class model's (N, channels, H, W) float32 probabilities, the mean over its folds."""
        batch, exclusive = batch_size or self.card.batch_size, self.card.classes.mode == "exclusive"
        infer = partial(predict_class_probs, device=device, exclusive=exclusive, batch_size=batch, amp_dtype=amp_dtype)
        return mean_probs((with_tta(infer) if tta else infer)(m, images) for m in self.members)


def network_from_checkpoint(ckpt: dict[str, Any], path: Path) -> torch.nn.Module:
    """The network a loaded checkpoint's header names, with its weights, in eval mode."""
    try:  # the header names what to build: an edited one is the checkpoint's fault, not a params section's
        classes = of_preprocess(ckpt.get("preprocess"), str(path))
        model = build_network(ckpt["model"], ckpt["in_channels"], ckpt["model_params"], classes.channels)
    except MedsegError as err:
        raise MedsegError(f"{path}: checkpoint header builds no network: {str(err).removeprefix('params.yaml: ')}") from err
    except (TypeError, ValueError, KeyError, RuntimeError) as err:  # a value of the wrong type deep in smp or timm
        raise MedsegError(f"{path}: checkpoint header builds no network ({first_line(err)})") from err
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise MedsegError(f"{path}: weights do not match model {ckpt['model']!r}") from err
    return model.eval()


def check_fits_slices(trained: TrainedModel, name: str, slices_info: dict[str, Any], slices: Path) -> None:
    """Refuse, naming both sides, a model that is not `name` or was trained on slices of another
    dataset, size, channel count, intensity window or rescaling than the `slices_info` (info.json of
    `slices`) it is about to be scored on: its scores would be silently wrong (e.g. `evaluate` run by
    hand after `convert.size` changed)."""
    card = trained.card
    if card.header.model != name:
        raise MedsegError(f"{card.checkpoints[0]}: holds a {card.header.model} model, not {name}; "
                          f"run the train_{name} stage")
    pre = card.header.preprocess
    differs = [f"{key} {pre.get(key)!r} vs {slices_info.get(key)!r}" for key in sorted(set(pre) | set(slices_info))
               if pre.get(key, "none" if key == "normalize" else None)
               != slices_info.get(key, "none" if key == "normalize" else None)]
    if differs:
        raise MedsegError(f"{card.checkpoints[0]}: trained on other slices than {slices / 'info.json'} "
                          f"({'; '.join(differs)}); run the train_{name} stage again")


def load_trained(model: Path) -> TrainedModel:
    """Load `model` (a checkpoint, a folder holding best.pt, or a k-fold folder) into its networks."""
    card, ckpts = read_card(model)
    return TrainedModel([network_from_checkpoint(c, p) for p, c in zip(card.checkpoints, ckpts)], card)
