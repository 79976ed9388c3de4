"""Weight EMA (`train.ema`) without a host sync per step.

torch's AveragedModel reads its step counter, a tensor on the device, every update (`n_averaged == 0`,
`n_averaged > 0`): on a GPU each optimizer step then waits for the device. This keeps the same
average, with the same state_dict (a last.pt written by AveragedModel resumes here), and counts the
steps on the host too; the device counter is still advanced, without being read.
"""
from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class EMA(AveragedModel):
    """An exponential moving average of the weights and buffers (BatchNorm statistics included) of a
    network: the first update copies them, each later one moves them `1 - decay` of the way."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.steps = 0  # the host's copy of n_averaged

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        averaged = itertools.chain(self.module.parameters(), self.module.buffers())
        current = itertools.chain(model.parameters(), model.buffers())
        pairs = [(a.detach(), c.detach().to(a.device)) for a, c in zip(averaged, current, strict=True)]
        if self.steps == 0:
            for a, c in pairs:
                a.copy_(c)
        else:  # grouped as AveragedModel groups them: the float ones lerp in one foreach call per dtype
            groups: dict[tuple[torch.device, torch.dtype], list[tuple[torch.Tensor, torch.Tensor]]] = defaultdict(list)
            for a, c in pairs:
                groups[(a.device, a.dtype)].append((a, c))
            for group in groups.values():
                self.multi_avg_fn([a for a, _ in group], [c for _, c in group], self.steps)
        self.n_averaged += 1
        self.steps += 1

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        result = super().load_state_dict(state_dict, strict, assign)
        self.steps = int(self.n_averaged)  # read once, at resume
        return result
