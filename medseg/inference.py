"""Batched sigmoid probabilities of a model over uint8 slices: one batch on the device at a time,
so inference memory is bounded by the batch, not by the number of slices."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from medseg.tta import flip_averaged


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def model_batch(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, H, W, C) uint8 (an array, or a tensor already held on the device) -> (B, C, H, W) float in
    [0, 1] on `device`, as training feeds the model."""
    held = images if isinstance(images, torch.Tensor) else torch.from_numpy(images)
    return held.to(device).permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def batch_logits(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int,
                 amp_dtype: torch.dtype | None = None, tta: bool = False) -> Iterator[tuple[slice, torch.Tensor]]:
    """Per batch, its rows and the float32 (B, 1, H, W) logits on the device; with `tta` the logit
    of the mean of the plain and the h-flipped probabilities."""
    model.eval()
    for start in range(0, len(images), batch_size):
        rows = slice(start, min(start + batch_size, len(images)))
        x = model_batch(images[rows], device)
        with autocast(device, amp_dtype):
            if tta:
                logits = torch.logit(flip_averaged(lambda t: torch.sigmoid(model(t).float()), x))
            else:
                logits = model(x).float()
        yield rows, logits


def predict_probs(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 16,
                  amp_dtype: torch.dtype | None = None, tta: bool = False) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, H, W) float32 foreground probabilities; `tta` averages a h-flip."""
    out = np.empty(images.shape[:3], np.float32)
    for rows, logits in batch_logits(model, images, device, batch_size, amp_dtype, tta):
        out[rows] = torch.sigmoid(logits)[:, 0].cpu().numpy()
    return out


def predict_class_probs(model: nn.Module, images: np.ndarray, device: torch.device, exclusive: bool,
                        batch_size: int = 16, amp_dtype: torch.dtype | None = None) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, channels, H, W) float32 per-channel probabilities of a multi-class
    network: softmax over background + classes (`exclusive`), else one sigmoid per region (TTA:
    medseg.tta.with_tta over it, width axis 2)."""
    activate = (lambda t: torch.softmax(t, dim=1)) if exclusive else torch.sigmoid
    out = None
    for rows, logits in batch_logits(model, images, device, batch_size, amp_dtype):
        if out is None:
            out = np.empty((len(images), *logits.shape[1:]), np.float32)
        out[rows] = activate(logits).cpu().numpy()
    return out if out is not None else np.empty((0,), np.float32)


def forward_flops(model: nn.Module, channels: int, size: int, device: torch.device) -> int:
    """FLOPs of one forward pass on one channels x size x size image (torch's FLOP counter:
    convolutions and matrix products, 2 FLOPs per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, channels, size, size, device=device))
    return int(counter.get_total_flops())
