"""Batched sigmoid probabilities of a model over uint8 slices."""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def predict_probs(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 32,
                  amp_dtype: torch.dtype | None = None, tta: bool = False) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, H, W) float32 foreground probabilities; `tta` averages a h-flip."""
    model.eval()
    out = np.empty(images.shape[:3], np.float32)
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start: start + batch_size]).to(device)
        x = batch.permute(0, 3, 1, 2).float().div_(255.0)
        with autocast(device, amp_dtype):
            prob = torch.sigmoid(model(x).float())
            if tta:
                prob = (prob + torch.sigmoid(model(x.flip(-1)).float()).flip(-1)) / 2
        out[start: start + len(batch)] = prob[:, 0].cpu().numpy()
    return out


def forward_flops(model: nn.Module, channels: int, size: int, device: torch.device) -> int:
    """FLOPs of one forward pass on one channels x size x size image (torch's FLOP counter:
    convolutions and matrix products, 2 FLOPs per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, channels, size, size, device=device))
    return int(counter.get_total_flops())
