"""DeepLabv3+ (Chen et al. 2018) from segmentation_models_pytorch.

Output stride 16, ASPP with rates 6/12/18 plus image pooling, 48-channel low-level projection
(smp's fixed value). With encoder resnet50 and 256 decoder channels this is the paper setting
(26.7M parameters at 3 input channels); the CPU default uses resnet18 and 64 channels.
"""
from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import nn

from models.encoders import with_weights


def deeplab_v3plus(in_channels: int, encoder: str = "resnet50", decoder_channels: int = 256,
                   pretrained: bool | str = False, out_channels: int = 1) -> nn.Module:
    return with_weights(
        lambda weights: smp.DeepLabV3Plus(
            encoder_name=encoder, encoder_weights=weights, in_channels=in_channels, classes=out_channels,
            encoder_output_stride=16, decoder_atrous_rates=(6, 12, 18),
            decoder_channels=decoder_channels),
        pretrained)
