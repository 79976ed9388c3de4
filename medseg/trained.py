"""The trained PyTorch model behind a `--model` path: one best.pt, or a k-fold model folder whose
fold_<k>/best.pt probabilities are averaged and thresholded at ensemble.json's threshold.

The one loader of `predict` (PyTorch path) and `export`, so both read the two layouts the same way.
"""
from __future__ import annotations

from functools import partial

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.checkpoints import load_checkpoint, model_from_checkpoint
from medseg.classes import BINARY, Classes, of_preprocess
from medseg.errors import MedsegError
from medseg.folds import ENSEMBLE, checkpoint_paths, mean_probs, read_ensemble
from medseg.inference import predict_class_probs, predict_probs
from medseg.tta import with_tta

SHARED = ("model", "model_params", "in_channels", "preprocess")  # what every fold of one model must agree on


@dataclass
class TrainedModel:
    """Networks (one per fold, on CPU, eval mode), what built them, and the threshold to apply."""

    members: list[nn.Module]
    header: dict[str, Any]  # SHARED keys of the (first) checkpoint
    threshold: float
    threshold_source: str
    paths: list[Path]
    computes: list[dict[str, Any]] = field(default_factory=list)  # each member's training record (device, dtype, time, batch)
    tuned: bool = False  # the threshold was chosen on val (out-of-fold) data by a training that finished
    classes: Classes = BINARY  # what the network's output channels are (medseg.classes)
    class_thresholds: list[float] | None = None  # per region, chosen on val; None: binary or argmax

    @property
    def batch_size(self) -> int:
        """The batch the model trained with: what its device is known to hold (16 for older checkpoints)."""
        return int((self.computes[0] if self.computes else {}).get("batch_size", 16))

    @property
    def folds(self) -> int:
        return len(self.members)

    def to(self, device: torch.device) -> TrainedModel:
        self.members = [m.to(device) for m in self.members]
        return self

    def probs(self, images: np.ndarray, device: torch.device, tta: bool = False, batch_size: int | None = None,
              amp_dtype: torch.dtype | None = None) -> np.ndarray:
        """(N, H, W, C) uint8 -> (N, H, W) float32: the mean of the folds' sigmoid probabilities,
        one batch (default: the training batch) on the device at a time."""
        batch = batch_size or self.batch_size
        return mean_probs([predict_probs(m, images, device, batch, amp_dtype, tta) for m in self.members])

    def class_probs(self, images: np.ndarray, device: torch.device, tta: bool = False,
                    batch_size: int | None = None, amp_dtype: torch.dtype | None = None) -> np.ndarray:
        """A multi-class model's (N, channels, H, W) float32 probabilities, the mean over its folds."""
        batch, exclusive = batch_size or self.batch_size, self.classes.mode == "exclusive"
        infer = partial(predict_class_probs, device=device, exclusive=exclusive, batch_size=batch, amp_dtype=amp_dtype)
        return mean_probs([(with_tta(infer) if tta else infer)(m, images) for m in self.members])


def check_fits_slices(trained: TrainedModel, name: str, slices_info: dict[str, Any], slices: Path) -> None:
    """Refuse, naming both sides, a model that is not `name` or was trained on slices of another
    dataset, size, channel count, intensity window or rescaling than the `slices_info` (info.json of
    `slices`) it is about to be scored on: its scores would be silently wrong (e.g. `evaluate` run by
    hand after `convert.size` changed)."""
    if trained.header["model"] != name:
        raise MedsegError(f"{trained.paths[0]}: holds a {trained.header['model']} model, not {name}; "
                          f"run the train_{name} stage")
    pre = trained.header["preprocess"]
    differs = [f"{key} {pre.get(key)!r} vs {slices_info.get(key)!r}" for key in sorted(set(pre) | set(slices_info))
               if pre.get(key, "none" if key == "normalize" else None)
               != slices_info.get(key, "none" if key == "normalize" else None)]
    if differs:
        raise MedsegError(f"{trained.paths[0]}: trained on other slices than {slices / 'info.json'} "
                          f"({'; '.join(differs)}); run the train_{name} stage again")


def check_one_run(model: Path, found: list[Path], runs: list[str | None], ensemble_run: str | None) -> None:
    """The fold checkpoints and ensemble.json of a k-fold folder come from one training: a retrain
    killed after its first folds leaves new folds beside old ones (another split or recipe), whose
    average would be scored as one model. Folders written before run ids existed carry none."""
    for path, run in zip(found, runs):
        if run != runs[0]:
            raise MedsegError(f"{path}: trained by another run than {found[0]} (the split, the sampling or the "
                              f"params changed, and the retrain did not finish); run the train stage of {model.name} "
                              "again")
    if ensemble_run is not None and runs[0] != ensemble_run:
        raise MedsegError(f"{model / ENSEMBLE}: written by another run than its fold checkpoints ({found[0]}); run the "
                          f"train stage of {model.name} again")


def load_trained(model: Path) -> TrainedModel:
    """Load `model` (a checkpoint, a folder holding best.pt, or a k-fold folder); one clear line when
    a checkpoint is unusable or the folds disagree on what they are."""
    model = Path(model)
    found = checkpoint_paths(model)
    ckpts = [load_checkpoint(path) for path in found]
    first = ckpts[0]
    for path, ckpt in zip(found, ckpts):
        if "preprocess" not in ckpt:
            raise MedsegError(f"{path}: checkpoint lacks its preprocessing; retrain with this version")
        for key in SHARED:
            if ckpt[key] != first[key]:
                raise MedsegError(f"{path}: {key}={ckpt[key]!r} differs from {found[0]}'s {first[key]!r}")
    members = [model_from_checkpoint(ckpt, path) for path, ckpt in zip(found, ckpts)]
    if model.is_dir() and (model / ENSEMBLE).exists():
        record = read_ensemble(model)
        check_one_run(model, found, [ckpt.get("run") for ckpt in ckpts], record.get("run"))
        source = record.get("threshold_source", "ensemble.json")
    else:
        record = first
        source = first.get("threshold_source", "default 0.5 (the checkpoint holds no val threshold)")
    classes = of_preprocess(first["preprocess"], str(found[0]))
    cuts = record.get("class_thresholds")
    if classes.mode == "regions" and cuts is not None and len(cuts) != len(classes.names):
        where = model / ENSEMBLE if record is not first else found[0]
        raise MedsegError(f"{where}: holds {len(cuts)} class threshold(s) for {len(classes.names)} regions "
                          f"({', '.join(classes.names)}); run its train stage again")
    return TrainedModel(members, {key: first[key] for key in SHARED}, float(record.get("threshold", 0.5)),
                        str(source), found, [c.get("compute", {}) for c in ckpts], "threshold_source" in record,
                        classes, record.get("class_thresholds"))
