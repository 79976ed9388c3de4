"""The four networks behind one factory; every one returns N x 1 x H x W logits for any H, W.

The registry is plain data, so reading the model names and their params (as params validation
does in every stage) imports no deep-learning library; a builder module is imported on first use.
Networks know nothing of the pipeline: nothing here imports medseg.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Architecture:
    """Where a network's builder lives, the side multiple its input is padded to, and its params:
    name -> {"kind": type or types, "low"/"high" or "choices", and a one-line "help"} (the
    `models.<name>` section).
    `min_batch`: the fewest images per training batch it can take, and `min_batch_why` the reason
    (BatchNorm after a global pooling sees one value per channel from a single image and fails)."""

    module: str
    builder: str
    multiple: int
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    min_batch: int = 1
    min_batch_why: str = ""


_WIDTH = {"width": {"kind": int, "low": 1, "high": 1_024,
                     "help": "channels of the first level (doubled at each of the four downsamplings)"}}
_ENCODER_DECODER = {
    "encoder": {"kind": str, "help": "an smp encoder (resnet18, resnet50, efficientnet-b0, ...) or tu-<timm name>"},
    "decoder_channels": {"kind": int, "low": 8, "high": 4_096, "help": "channels of the decoder"},
    "pretrained": {"kind": (bool, str), "choices": (False, "imagenet"),
                   "help": "false, or imagenet encoder weights (needs them in the cache when offline)"},
}
ARCHITECTURES: dict[str, Architecture] = {
    "unet": Architecture("models.unet", "classic_unet", 16, _WIDTH),
    "attn_unet": Architecture("models.attn_unet", "attention_unet", 16, _WIDTH),
    "deeplab": Architecture("models.deeplab", "deeplab_v3plus", 16, _ENCODER_DECODER, 2,
                            "the BatchNorm after the image pooling of its ASPP"),
    "upernet": Architecture("models.upernet", "upernet", 32, _ENCODER_DECODER, 2,
                            "the BatchNorm after the 1x1 level of its pyramid pooling"),
}
MODEL_NAMES: tuple[str, ...] = tuple(ARCHITECTURES)
FOREGROUND_PRIOR = 0.01


def build_model(name: str, in_channels: int, out_channels: int = 1, **params: Any):
    """Build model `name` from its `models.<name>` params section, wrapped to accept any size, with
    `out_channels` logits per pixel (1: binary; several: one per class or region).

    Raises KeyError for an unknown name and models.encoders.WeightsUnavailable when pretrained
    weights cannot be fetched."""
    from models.padding import PadToMultiple

    if name not in ARCHITECTURES:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    arch = ARCHITECTURES[name]
    builder = getattr(importlib.import_module(arch.module), arch.builder)
    net = builder(in_channels=in_channels, out_channels=out_channels, **params)
    init_foreground_prior(net, FOREGROUND_PRIOR, out_channels)
    return PadToMultiple(net, arch.multiple)


def init_foreground_prior(net, prior: float, out_channels: int = 1) -> None:
    """Start the output layer at a rare-foreground prior (Lin et al. 2017) instead of p=0.5, so
    early training is not spent unlearning a flood of false positives (each sigmoid channel alike;
    on a softmax head equal biases cancel, so it starts uniform)."""
    from torch import nn

    heads = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.out_channels == out_channels]
    if heads and heads[-1].bias is not None:
        nn.init.constant_(heads[-1].bias, math.log(prior / (1 - prior)))
