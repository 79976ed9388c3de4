"""Checkpoints that load with torch.load(weights_only=True) and carry what built them."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from medseg.errors import MedsegError
from medseg.outputs import write_atomic

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
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], path: Path) -> torch.nn.Module:
    from medseg.networks import build_network

    model = build_network(ckpt["model"], ckpt["in_channels"], ckpt["model_params"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise MedsegError(f"{path}: weights do not match model {ckpt['model']!r}") from err
    return model.eval()
