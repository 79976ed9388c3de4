"""UPerNet (Xiao et al. 2018) from segmentation_models_pytorch: pyramid pooling + FPN fusion.

Any smp or timm (`tu-` prefix) encoder: the Swin-B of SIIM's reference setup is `tu-swin_base_patch4_window7_224`
(needs input sides that suit its windows); the CPU default is resnet18 (UPerNet as the paper ran it, on a small ResNet).
"""
from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import nn

from models.encoders import with_weights


def upernet(in_channels: int, encoder: str = "tu-convnext_tiny", decoder_channels: int = 256,
            pretrained: bool | str = False, out_channels: int = 1) -> nn.Module:
    return with_weights(
        lambda weights: smp.UPerNet(
            encoder_name=encoder, encoder_weights=weights, in_channels=in_channels, classes=out_channels,
            decoder_channels=decoder_channels),
        pretrained)
