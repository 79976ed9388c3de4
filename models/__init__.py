"""The four networks behind one factory; every one returns N x 1 x H x W logits for any H, W."""
from __future__ import annotations

import math
from typing import Any

from torch import nn

from medseg.errors import MedsegError
from models.attn_unet import attention_unet
from models.deeplab import deeplab_v3plus
from models.padding import PadToMultiple
from models.unet import classic_unet
from models.upernet import upernet

BUILDERS = {
    "unet": (classic_unet, 16),
    "attn_unet": (attention_unet, 16),
    "deeplab": (deeplab_v3plus, 16),
    "upernet": (upernet, 32),
}


def build_model(name: str, in_channels: int, **params: Any) -> nn.Module:
    """Build model `name` from its `models.<name>` params section, wrapped to accept any size."""
    if name not in BUILDERS:
        raise MedsegError(f"unknown model {name!r}; known: {', '.join(BUILDERS)}")
    builder, multiple = BUILDERS[name]
    net = builder(in_channels=in_channels, **params)
    init_foreground_prior(net, FOREGROUND_PRIOR)
    return PadToMultiple(net, multiple)


FOREGROUND_PRIOR = 0.01


def init_foreground_prior(net: nn.Module, prior: float) -> None:
    """Start the output layer at a rare-foreground prior (Lin et al. 2017) instead of p=0.5, so
    early training is not spent unlearning a flood of false positives."""
    heads = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 1]
    if heads and heads[-1].bias is not None:
        nn.init.constant_(heads[-1].bias, math.log(prior / (1 - prior)))
