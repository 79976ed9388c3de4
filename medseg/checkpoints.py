"""Checkpoints that load with torch.load(weights_only=True) and carry what built them."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from medseg.errors import MedsegError, first_line
from medseg.outputs import write_atomic
from medseg.params import is_count, is_finite, is_probability

FORMAT = "medseg-checkpoint-v1"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    write_atomic(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load safely; anything that is not a medseg checkpoint is rejected with one line."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise MedsegError(f"{path}: checkpoint not found") from err
    except Exception as err:  # unpickling errors come in many types
        raise MedsegError(f"{path}: not a loadable checkpoint ({type(err).__name__})") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise MedsegError(f"{path}: not a medseg checkpoint")
    for key in ("model", "model_params", "in_channels", "state_dict"):
        if key not in ckpt:
            raise MedsegError(f"{path}: checkpoint lacks '{key}'")
    check_header(path, ckpt)
    return ckpt


def check_header(path: Path, ckpt: dict[str, Any]) -> None:
    """The header fields a checkpoint is read back by, each of the type and range it was written
    with: a missing or edited one is named with the file, not left to fail in a params check later."""
    if not isinstance(ckpt["model"], str) or not isinstance(ckpt["model_params"], dict):
        raise MedsegError(f"{path}: checkpoint header model={ckpt['model']!r} / model_params is not what medseg "
                          "writes (a name and a mapping)")
    if not is_count(ckpt["in_channels"]):
        raise MedsegError(f"{path}: checkpoint in_channels={ckpt['in_channels']!r} is not a positive integer")
    pre = ckpt.get("preprocess")
    if pre is not None:
        if not isinstance(pre, dict):
            raise MedsegError(f"{path}: checkpoint preprocess={pre!r} is not a mapping")
        for key in ("size", "channels"):
            if not is_count(pre.get(key)):
                raise MedsegError(f"{path}: checkpoint preprocess.{key}={pre.get(key)!r} is not a positive integer")
        for key in ("window_level", "window_width"):
            if key in pre and not is_finite(pre[key]):
                raise MedsegError(f"{path}: checkpoint preprocess.{key}={pre[key]!r} is not a finite number")
    if "threshold" in ckpt and not is_probability(ckpt["threshold"]):
        raise MedsegError(f"{path}: checkpoint threshold={ckpt['threshold']!r} is not a number in [0, 1]")
    cuts = ckpt.get("class_thresholds")
    if cuts is not None and not (isinstance(cuts, list) and all(map(is_probability, cuts))):
        raise MedsegError(f"{path}: checkpoint class_thresholds={cuts!r} is not a list of numbers in [0, 1]")


def model_from_checkpoint(ckpt: dict[str, Any], path: Path) -> torch.nn.Module:
    from medseg.classes import of_preprocess
    from medseg.networks import build_network

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
