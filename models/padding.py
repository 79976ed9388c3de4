"""Pad inputs up to the network's stride multiple and crop the logits back."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def padded_side(side, multiple: int):
    """`side` rounded up to a multiple of `multiple`. The ceil form works on ints and on torch.export's
    symbolic sizes alike (where it is provably a multiple, which `-side % multiple` is not)."""
    return (side + multiple - 1) // multiple * multiple


class PadToMultiple(nn.Module):
    """Wraps a network whose input sides must be multiples of `multiple` (zero padding)."""

    def __init__(self, net: nn.Module, multiple: int) -> None:
        super().__init__()
        self.net = net
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = padded_side(h, self.multiple) - h, padded_side(w, self.multiple) - w
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        return self.net(x)[..., :h, :w]
